//! cuda/handoff_sm90.cu: one run of the hand-off microbenchmark — `steps` dependency steps over
//! `blocks` blocks, one of three ways — shared by its test (kernels-tests/tests/handoff_sm90.rs) and its
//! binary (src/bin/handoff.rs), which times it.
use modernbert::kernels::device::{Device, DeviceBuffer};
use modernbert::kernels::params::{HandoffParams, MB_HANDOFF_THREADS};
use modernbert::kernels::{KernelError, KernelParam};

/// How one step hands its result to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// A launch per step, ordered by the stream.
    Launch,
    /// A launch per step as a programmatic dependent of the one before (griddepcontrol.wait).
    Dependent,
    /// One co-scheduled launch, a grid barrier in global memory between steps.
    Persistent,
}

impl Handoff {
    pub const ALL: [Handoff; 3] = [Handoff::Launch, Handoff::Dependent, Handoff::Persistent];
    pub fn name(self) -> &'static str {
        match self {
            Handoff::Launch => "launch",
            Handoff::Dependent => "pdl",
            Handoff::Persistent => "persistent",
        }
    }
}

/// The buffers of one run: `out [steps, blocks]` and the persistent kernel's `flags [blocks]`.
pub struct HandoffRun {
    pub way: Handoff,
    pub steps: u32,
    pub blocks: u32,
    out: DeviceBuffer,
    flags: DeviceBuffer,
}

impl HandoffRun {
    pub fn new(dev: &dyn Device, way: Handoff, steps: u32, blocks: u32) -> Result<Self, KernelError> {
        let (s, g) = (steps.max(1) as usize, blocks.max(1) as usize);
        Ok(HandoffRun {
            way,
            steps,
            blocks,
            out: dev.upload_new(&vec![0xff; s * g * 4], "handoff out")?,
            flags: dev.upload_new(&vec![0; g * 4], "handoff flags")?,
        })
    }

    /// Zero the flags and poison `out` (outside any timed region).
    pub fn reset(&mut self, dev: &dyn Device) -> Result<(), KernelError> {
        let (s, g) = (self.steps.max(1) as usize, self.blocks.max(1) as usize);
        dev.upload(&mut self.out, 0, &vec![0xff; s * g * 4])?;
        dev.upload(&mut self.flags, 0, &vec![0; g * 4])
    }

    /// Enqueue the run's launches (no synchronisation).
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        let (grid, block) = ([self.blocks, 1, 1], [MB_HANDOFF_THREADS, 1, 1]);
        let mut p = HandoffParams {
            out: self.out.addr(),
            flags: self.flags.addr(),
            step: 0,
            steps: self.steps,
        };
        match self.way {
            Handoff::Persistent => dev.launch_coscheduled("handoff_persistent", grid, block, 0, &p),
            Handoff::Launch | Handoff::Dependent => {
                for step in 0..self.steps {
                    p.step = step;
                    if self.way == Handoff::Dependent && step > 0 {
                        dev.launch_dependent_raw("handoff_step", grid, block, 0, p.as_bytes())?;
                    } else {
                        dev.launch("handoff_step", grid, block, 0, &p)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// After the run: every block's value of step s is s + 1.
    pub fn check(&self, dev: &dyn Device) -> Result<(), String> {
        let bytes = dev.download_vec(&self.out).map_err(|e| e.to_string())?;
        let g = self.blocks as usize;
        for (i, v) in bytes.chunks(4).take(self.steps as usize * g).enumerate() {
            let v = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let (step, block) = (i / g, i % g);
            if v != step as u32 + 1 {
                return Err(format!(
                    "{} of {} steps x {} blocks: step {step}, block {block} holds {v}, not {}",
                    self.way.name(),
                    self.steps,
                    self.blocks,
                    step + 1
                ));
            }
        }
        Ok(())
    }
}
