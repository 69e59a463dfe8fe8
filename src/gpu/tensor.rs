//! A tensor is a storage buffer with a shape. f32 unless made with `*_u32`, or f16 (`half`) when
//! made with [`Gpu::upload_half`]: frozen base weights on a device with `shader-f16`.

use super::{Gpu, GpuError};

pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub label: String,
    /// Elements are f16 (2 bytes each; kernels that read it convert to f32).
    pub half: bool,
}

impl Tensor {
    /// Another handle on the same buffer (wgpu buffers are reference-counted): a view that
    /// shares this tensor's memory.
    pub fn shared(&self) -> Tensor {
        Tensor { buffer: self.buffer.clone(), shape: self.shape.clone(), label: self.label.clone(), half: self.half }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of its elements (2 an element when `half`, else 4).
    pub fn bytes(&self) -> u64 {
        self.elem_bytes() * self.len() as u64
    }
    pub fn elem_bytes(&self) -> u64 {
        if self.half { 2 } else { 4 }
    }
}

/// Bytes of the buffer a tensor of `elems` elements gets: 4 bytes an element, at least 16, in
/// whole vec4s (so a kernel may bind any tensor as array<vec4<f32>>).
pub fn tensor_bytes(elems: usize) -> u64 {
    tensor_bytes_of(elems, false)
}

/// Bytes of the buffer of an `elems`-element tensor, f16 (`half`: 2 bytes an element) or 4-byte
/// elements: at least 4 elements, rounded up to 16 bytes (so it also holds whole vec4s of f16).
pub fn tensor_bytes_of(elems: usize, half: bool) -> u64 {
    let each = if half { 2 } else { 4 };
    (elems.max(4) as u64).saturating_mul(each).checked_next_multiple_of(16).unwrap_or(u64::MAX)
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    fn raw_buffer(&self, label: &str, elems: usize, half: bool) -> Result<wgpu::Buffer, GpuError> {
        let bytes = tensor_bytes_of(elems, half);
        self.check_binding(label, bytes)?;
        self.allocated.set(self.allocated.get() + bytes);
        self.ledger.borrow_mut().push(super::Allocation { label: label.to_string(), bytes, class: self.class.get() });
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        }))
    }

    /// A zero-filled tensor (f32 or u32: 4 bytes an element).
    pub fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor, GpuError> {
        let n = crate::memory::elements(shape).unwrap_or(usize::MAX);
        Ok(Tensor { buffer: self.raw_buffer(label, n, false)?, shape: shape.to_vec(), label: label.to_string(), half: false })
    }

    /// A tensor holding `data` rounded to f16 (round to nearest even, as PyTorch's `.half()`):
    /// half the memory of [`upload`](Self::upload). Only on a device with `shader-f16`.
    pub fn upload_half(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor, GpuError> {
        let t = self.zeros_half(label, shape)?;
        self.write_at(&t, 0, data);
        Ok(t)
    }

    /// A zero-filled f16 tensor (see [`upload_half`](Self::upload_half)).
    pub fn zeros_half(&self, label: &str, shape: &[usize]) -> Result<Tensor, GpuError> {
        if !self.report.shader_f16 {
            return Err(GpuError::Invalid(format!("{label}: f16 tensors need a GPU with shader-f16, which this one lacks")));
        }
        let n = crate::memory::elements(shape).unwrap_or(usize::MAX);
        Ok(Tensor { buffer: self.raw_buffer(label, n, true)?, shape: shape.to_vec(), label: label.to_string(), half: true })
    }

    /// Writes `data` into `t` from element `at` on (queued), rounded to f16 when `t` is. For an
    /// f16 tensor `at` must be even (writes are whole 4-byte words); an odd-length `data` then
    /// also writes the zero after it, inside the buffer (whole 16 bytes).
    pub fn write_at(&self, t: &Tensor, at: usize, data: &[f32]) {
        debug_assert!(at + data.len() <= t.len().max(4));
        if data.is_empty() {
            return;
        }
        if t.half {
            debug_assert!(at.is_multiple_of(2));
            let mut bits: Vec<u16> = data.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
            if bits.len() % 2 == 1 {
                bits.push(0);
            }
            self.queue.write_buffer(&t.buffer, 2 * at as u64, bytemuck::cast_slice(&bits));
        } else {
            self.queue.write_buffer(&t.buffer, 4 * at as u64, bytemuck::cast_slice(data));
        }
    }

    /// A tensor holding `data` (f32).
    pub fn upload(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor, GpuError> {
        let t = self.zeros(label, shape)?;
        self.write(&t, data);
        Ok(t)
    }

    /// A tensor holding `data` (u32, e.g. token ids).
    pub fn upload_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor, GpuError> {
        let t = self.zeros(label, shape)?;
        self.write_u32(&t, data);
        Ok(t)
    }

    /// Overwrites the start of `t` with `data` (queued; lands before the next submit runs; rounded
    /// to f16 when `t` is, see [`write_at`](Self::write_at)).
    pub fn write(&self, t: &Tensor, data: &[f32]) {
        self.write_at(t, 0, data);
    }

    pub fn write_u32(&self, t: &Tensor, data: &[u32]) {
        debug_assert!(data.len() <= t.len().max(4));
        if !data.is_empty() {
            self.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        }
    }

    /// Sets every element of `t` to zero (queued).
    pub fn clear(&self, t: &Tensor) {
        let mut enc = self.encoder("clear");
        enc.clear_buffer(&t.buffer, 0, None);
        self.submit(enc);
    }

    /// Copies `t` back to the host. Does not block the thread: in the browser the
    /// future completes from the event loop, natively `poll_wait` drives it.
    /// An f16 tensor is read back as the f32 values it holds.
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>, GpuError> {
        if t.half {
            let bytes = self.read_bytes(&t.buffer, t.bytes().next_multiple_of(4), &t.label).await?;
            let bits: Vec<u16> = bytemuck::pod_collect_to_vec(&bytes);
            return Ok(bits[..t.len()].iter().map(|&b| half::f16::from_bits(b).to_f32()).collect());
        }
        let bytes = self.read_bytes(&t.buffer, t.bytes(), &t.label).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>, GpuError> {
        let bytes = self.read_bytes(&t.buffer, t.bytes(), &t.label).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    async fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64, label: &str) -> Result<Vec<u8>, GpuError> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder("readback");
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.submit(enc);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.poll_wait();
        let mapped = rx.await.map_err(|_| GpuError::Readback(label.into(), "device dropped the request".into()))?;
        mapped.map_err(|e| GpuError::Readback(label.into(), e.to_string()))?;
        self.check()?;
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(label.into(), e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Native convenience: `read` and wait.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(&self, t: &Tensor) -> Result<Vec<f32>, GpuError> {
        pollster::block_on(self.read(t))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32_blocking(&self, t: &Tensor) -> Result<Vec<u32>, GpuError> {
        pollster::block_on(self.read_u32(t))
    }
}
