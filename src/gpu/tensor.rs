//! A tensor is a storage buffer with a shape. f32 unless made with `*_u32`.

use super::{Gpu, GpuError};

pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub label: String,
}

impl Tensor {
    /// Another handle on the same buffer (wgpu buffers are reference-counted): a view that
    /// shares this tensor's memory.
    pub fn shared(&self) -> Tensor {
        Tensor { buffer: self.buffer.clone(), shape: self.shape.clone(), label: self.label.clone() }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> u64 {
        4 * self.len() as u64
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    fn raw_buffer(&self, label: &str, elems: usize) -> Result<wgpu::Buffer, GpuError> {
        // Whole vec4s, so a kernel may bind any tensor as array<vec4<f32>>.
        let bytes = (elems.max(4) as u64).saturating_mul(4).checked_next_multiple_of(16).unwrap_or(u64::MAX);
        self.check_binding(label, bytes)?;
        self.allocated.set(self.allocated.get() + bytes);
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
        Ok(Tensor { buffer: self.raw_buffer(label, n)?, shape: shape.to_vec(), label: label.to_string() })
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

    /// Overwrites the start of `t` with `data` (queued; lands before the next submit runs).
    pub fn write(&self, t: &Tensor, data: &[f32]) {
        debug_assert!(data.len() <= t.len().max(4));
        if !data.is_empty() {
            self.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        }
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
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>, GpuError> {
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
