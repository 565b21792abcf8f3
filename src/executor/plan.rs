//! What each device's actions receive and send, derived from the schedule's
//! own dependencies ([`Action::needs`] / [`Action::produces`]) and nothing
//! else: no "input from stage − 1, output to stage + 1" anywhere.
//!
//! A product crosses from one stage to another as a *message*: an activation
//! from stage s to s + 1, an input gradient from stage s + 1 to s. A message
//! between two devices goes through the transport; between two stages on the
//! same device (one device holding several chunks) through a local buffer. A
//! product used by its own stage (the activations a backward needs from its
//! forward, the input gradient W needs from I) is the stage program's state
//! and does not move at all.

use crate::action::{Action, Product};
use crate::schedule::Schedule;

/// A message an action needs before it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub product: Product,
    pub producer: Action,
    /// Device that runs the producer (this device: a local hand-over).
    pub from: usize,
}

/// A message an action makes for a later action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub product: Product,
    pub consumer: Action,
    /// Device that runs the consumer (this device: a local hand-over).
    pub to: usize,
}

/// One action of a device's row, with its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub inputs: Vec<Incoming>,
    pub outputs: Vec<Outgoing>,
}

/// Every device's steps, in the schedule's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub devices: Vec<Vec<Step>>,
}

impl Plan {
    /// The messages of a valid schedule (validate it first: a product
    /// nobody makes is simply not received).
    pub fn new(s: &Schedule) -> Plan {
        let mut maker: std::collections::HashMap<Product, (Action, usize)> = Default::default();
        for (d, _, a) in s.actions() {
            maker.insert(a.produces(), (a, d));
        }
        let mut inputs: std::collections::HashMap<Action, Vec<Incoming>> = Default::default();
        let mut outputs: std::collections::HashMap<Action, Vec<Outgoing>> = Default::default();
        for (d, _, consumer) in s.actions() {
            for product in s.needs(&consumer) {
                let Some(&(producer, from)) = maker.get(&product) else {
                    continue;
                };
                if producer.stage == consumer.stage {
                    continue; // the stage's own state, not a message
                }
                inputs.entry(consumer).or_default().push(Incoming {
                    product,
                    producer,
                    from,
                });
                outputs.entry(producer).or_default().push(Outgoing {
                    product,
                    consumer,
                    to: d,
                });
            }
        }
        let devices = s
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .flatten()
                    .map(|&action| Step {
                        action,
                        inputs: inputs.remove(&action).unwrap_or_default(),
                        outputs: outputs.remove(&action).unwrap_or_default(),
                    })
                    .collect()
            })
            .collect();
        Plan { devices }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Kind, ProductKind};
    use crate::schedule::ScheduleKind;

    fn step<'a>(plan: &'a Plan, d: usize, a: &str) -> &'a Step {
        let a: Action = a.parse().unwrap();
        plan.devices[d].iter().find(|s| s.action == a).unwrap()
    }

    #[test]
    fn activations_go_forward_and_gradients_backward() {
        let s = Schedule::generate(ScheduleKind::OneFOneB, 2, 2, 1, false).unwrap();
        let plan = Plan::new(&s);
        // 0F0 sends its activation to 1F0 on device 1.
        let f = step(&plan, 0, "0F0");
        assert!(f.inputs.is_empty());
        assert_eq!(f.outputs.len(), 1);
        assert_eq!(f.outputs[0].consumer, Action::new(1, Kind::F, 0));
        assert_eq!(f.outputs[0].to, 1);
        assert_eq!(f.outputs[0].product.what, ProductKind::Activation);
        // 1B0 needs 1F0's activation (its own state: no message) and sends
        // its input gradient back to 0B0.
        let b = step(&plan, 1, "1B0");
        assert!(b.inputs.is_empty());
        assert_eq!(b.outputs[0].consumer, Action::new(0, Kind::B, 0));
        assert_eq!(b.outputs[0].product.what, ProductKind::InputGradient);
        let b0 = step(&plan, 0, "0B0");
        assert_eq!(b0.inputs.len(), 1);
        assert_eq!(b0.inputs[0].producer, Action::new(1, Kind::B, 0));
        assert_eq!(b0.inputs[0].from, 1);
    }

    #[test]
    fn zero_bubble_w_needs_no_message() {
        let s = Schedule::generate(ScheduleKind::ZbH1, 2, 4, 1, false).unwrap();
        let plan = Plan::new(&s);
        for steps in &plan.devices {
            for st in steps.iter().filter(|st| st.action.kind == Kind::W) {
                assert!(st.inputs.is_empty() && st.outputs.is_empty(), "{st:?}");
            }
        }
        // 0I1 receives 1I1's gradient.
        assert_eq!(step(&plan, 0, "0I1").inputs[0].producer.to_string(), "1I1");
    }

    #[test]
    fn chunks_on_one_device_hand_over_locally() {
        let s = Schedule::for_inference(ScheduleKind::Interleaved, 1, 2, 2).unwrap();
        let plan = Plan::new(&s);
        let out = &step(&plan, 0, "0F1").outputs[0];
        assert_eq!((out.to, out.consumer.to_string()), (0, "1F1".to_string()));
    }
}
