//! A plan run without its messages: each device's steps in the same order,
//! an action whose input would have arrived as a message reading a fixed
//! activation instead (written into its input buffer with
//! `queue.write_buffer` before its submission, as the transport writes a
//! received one), so every action computes on ordinary numbers, outside its
//! timed span, and no device waits for another. The co-run and solo
//! controls (`crate::analysis::corun`) and the layer profile behind
//! `--split auto` (`crate::workload::profile`) run such plans.

use std::collections::HashMap;

use super::plan::{Plan, Step};
use super::program::StageProgram;
use super::ActionEncoder;
use crate::action::{Action, Product};
use crate::device::Gpu;
use crate::error::Result;

/// `plan` with every message removed: each device's steps in the same
/// order, receiving and sending nothing.
pub fn without_messages(plan: &Plan) -> Plan {
    Plan {
        devices: plan
            .devices
            .iter()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| Step {
                        action: s.action,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                    })
                    .collect()
            })
            .collect(),
    }
}

/// A program whose actions read fixed inputs in place of the messages a
/// plan without messages no longer delivers.
pub struct Fed<P> {
    inner: P,
    /// Per action: the products that would have arrived as messages.
    feeds: HashMap<Action, Vec<Product>>,
    /// The fixed input, as long as the longest message.
    bytes: Vec<u8>,
}

impl<P: StageProgram> Fed<P> {
    /// Feed `inner` the inputs `steps` (with their messages) would have
    /// received.
    pub fn new(inner: P, steps: &[Step]) -> Fed<P> {
        let feeds: HashMap<Action, Vec<Product>> = steps
            .iter()
            .filter(|s| !s.inputs.is_empty())
            .map(|s| (s.action, s.inputs.iter().map(|i| i.product).collect()))
            .collect();
        let longest = feeds
            .values()
            .flatten()
            .map(|&p| inner.message_bytes(p))
            .max()
            .unwrap_or(0);
        Fed {
            inner,
            feeds,
            bytes: fixed_input((longest as usize).div_ceil(4)),
        }
    }
}

/// `n` f32 of a fixed, roughly unit-scale pattern (a residual stream's
/// order of magnitude), as bytes.
fn fixed_input(n: usize) -> Vec<u8> {
    let vals: Vec<f32> = (0..n)
        .map(|i| {
            // A cheap deterministic hash to [-1, 1).
            let h = (i as u32).wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9e37_79b9;
            (h as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect();
    bytemuck::cast_slice(&vals).to_vec()
}

impl<P: StageProgram> StageProgram for Fed<P> {
    type Output = P::Output;

    fn message_bytes(&self, p: Product) -> u64 {
        self.inner.message_bytes(p)
    }

    fn input(&self, consumer: Action, p: Product) -> &wgpu::Buffer {
        self.inner.input(consumer, p)
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        self.inner.output(producer)
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        if let Some(products) = self.feeds.get(&a) {
            for &p in products {
                let bytes = self.inner.message_bytes(p) as usize;
                gpu.queue
                    .write_buffer(self.inner.input(a, p), 0, &self.bytes[..bytes]);
            }
        }
        self.inner.encode(gpu, a, enc)
    }

    fn encode_results(&mut self, gpu: &Gpu, a: Action, enc: &mut wgpu::CommandEncoder) {
        self.inner.encode_results(gpu, a, enc)
    }

    fn finish(self, gpu: &Gpu) -> Result<Self::Output> {
        self.inner.finish(gpu)
    }

    fn output_to_bytes(o: &Self::Output) -> Option<Vec<u8>> {
        P::output_to_bytes(o)
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        P::output_from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Schedule, ScheduleKind};

    #[test]
    fn removing_messages_keeps_every_action_in_order() {
        let s = Schedule::for_inference(ScheduleKind::Interleaved, 2, 4, 2).unwrap();
        let plan = Plan::new(&s);
        let bare = without_messages(&plan);
        for (full, bare) in plan.devices.iter().zip(&bare.devices) {
            let a: Vec<Action> = full.iter().map(|s| s.action).collect();
            let b: Vec<Action> = bare.iter().map(|s| s.action).collect();
            assert_eq!(a, b);
            assert!(bare
                .iter()
                .all(|s| s.inputs.is_empty() && s.outputs.is_empty()));
        }
    }

    #[test]
    fn the_fixed_input_is_finite_and_unit_scale() {
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&fixed_input(1000));
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        let mean = v.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.2, "mean {mean}");
    }
}
