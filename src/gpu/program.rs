//! Prepared dispatches. A kernel call in src/kernels builds a [`Dispatch`] once (pipeline,
//! uniform buffer, bind group, grid); a [`Program`] is the ordered list of them that
//! makes a forward pass or a training step, recorded into one compute pass.

use std::rc::Rc;

use super::Gpu;

/// A compiled entry point plus the bindings (group 0) it really uses, found by naga.
#[derive(Clone)]
pub struct Kernel {
    pub pipeline: Rc<wgpu::ComputePipeline>,
    pub used_bindings: Rc<Vec<u32>>,
    /// Those of its storage bindings that are declared read_write.
    pub writable_bindings: Rc<Vec<u32>>,
}

/// One ready-to-record dispatch: nothing is created when it is recorded.
pub struct Dispatch {
    pub label: String,
    pipeline: Rc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: (u32, u32, u32),
    // keeps the uniform buffer alive as long as the bind group
    _uniforms: Option<wgpu::Buffer>,
}

#[derive(Default)]
pub struct Program {
    /// Buffers zeroed before the first dispatch (gradient accumulators).
    pub clears: Vec<wgpu::Buffer>,
    pub dispatches: Vec<Dispatch>,
}

impl Program {
    pub fn new() -> Program {
        Program::default()
    }
    /// Zero `t` at the start of every run of this program.
    pub fn clear(&mut self, t: &super::Tensor) {
        self.clears.push(t.buffer.clone());
    }
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
    pub fn append(&mut self, other: Program) {
        self.clears.extend(other.clears);
        self.dispatches.extend(other.dispatches);
    }
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Records the clears, then every dispatch in order into one compute pass of `encoder`.
    /// wgpu orders dispatches in a pass by their storage-buffer dependencies.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        for b in &self.clears {
            encoder.clear_buffer(b, 0, None);
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        for d in &self.dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups.0, d.workgroups.1, d.workgroups.2);
        }
    }

    /// Records and submits (one encoder, one submit).
    pub fn run(&self, gpu: &Gpu) {
        let mut enc = gpu.encoder("program");
        self.record(&mut enc);
        gpu.submit(enc);
    }
}

impl Gpu {
    /// Prepares a dispatch. `params` (a `#[repr(C)]` Pod struct's bytes) go into a new
    /// uniform buffer at binding 0; `buffers` are (binding, buffer) pairs. Bindings that
    /// this entry point does not use are left out, so one binding list serves every
    /// entry point of a shader file.
    pub fn dispatch(
        &self,
        label: &str,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        workgroups: (u32, u32, u32),
    ) -> Dispatch {
        let uniforms = if !params.is_empty() && kernel.used_bindings.contains(&0) {
            let mut padded = params.to_vec();
            padded.resize(params.len().div_ceil(16) * 16, 0);
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: padded.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.queue.write_buffer(&buf, 0, &padded);
            Some(buf)
        } else {
            None
        };
        // WebGPU (Chrome) rejects a dispatch that binds a buffer it writes to a second binding;
        // wgpu on Vulkan lets some such cases through, so catch them here in debug builds.
        #[cfg(debug_assertions)]
        for (i, (b, buf)) in buffers.iter().enumerate() {
            let used = |b: &u32| *b != 0 && kernel.used_bindings.contains(b);
            if used(b) && kernel.writable_bindings.contains(b) {
                let other = buffers.iter().enumerate().find(|&(j, (c, other))| j != i && used(c) && *other == *buf);
                debug_assert!(other.is_none(), "{label}: the buffer written through binding {b} is bound again at {:?}", other.map(|o| o.1 .0));
            }
        }
        let mut entries = Vec::new();
        if let Some(u) = &uniforms {
            entries.push(wgpu::BindGroupEntry { binding: 0, resource: u.as_entire_binding() });
        }
        for (binding, buf) in buffers {
            if *binding != 0 && kernel.used_bindings.contains(binding) {
                entries.push(wgpu::BindGroupEntry { binding: *binding, resource: buf.as_entire_binding() });
            }
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &kernel.pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch {
            label: label.to_string(),
            pipeline: kernel.pipeline.clone(),
            bind_group,
            workgroups,
            _uniforms: uniforms,
        }
    }
}
