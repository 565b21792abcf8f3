//! The schedule generators by name: the one list of names, read by the CLI
//! (`--schedule`, via [`clap::ValueEnum`]), by `Display`/`FromStr`, by serde
//! and by the analytic formulas.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::schedule::ScheduleError;

/// A schedule generator; see [`crate::schedule::generate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScheduleKind {
    /// `gpipe`: fill-drain, all forwards then all backwards.
    Gpipe,
    /// `1f1b`: PipeDream-Flush, one forward then one backward.
    OneFOneB,
    /// `interleaved`: Megatron's interleaved 1F1B over v chunks per device.
    Interleaved,
    /// `zb-h1`: zero-bubble H1, backward split into I and W.
    ZbH1,
}

impl ScheduleKind {
    /// Every generator, in the order the CLI lists them.
    pub const ALL: [ScheduleKind; 4] = [
        ScheduleKind::Gpipe,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved,
        ScheduleKind::ZbH1,
    ];

    /// The name on the command line, in CSV headers and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Gpipe => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Interleaved => "interleaved",
            ScheduleKind::ZbH1 => "zb-h1",
        }
    }

    /// The names, comma-separated, for messages.
    pub fn names() -> String {
        ScheduleKind::ALL.map(ScheduleKind::name).join(", ")
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for ScheduleKind {
    type Err = ScheduleError;

    fn from_str(name: &str) -> Result<ScheduleKind, ScheduleError> {
        ScheduleKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| ScheduleError::UnknownSchedule {
                name: name.to_string(),
            })
    }
}

impl clap::ValueEnum for ScheduleKind {
    fn value_variants<'a>() -> &'a [ScheduleKind] {
        &ScheduleKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

impl Serialize for ScheduleKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ScheduleKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ScheduleKind, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::ScheduleKind;

    #[test]
    fn names_round_trip_through_text_clap_and_serde() {
        use clap::ValueEnum;
        for k in ScheduleKind::ALL {
            assert_eq!(k.to_string().parse::<ScheduleKind>().unwrap(), k);
            assert_eq!(ScheduleKind::from_str(k.name(), false).unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<ScheduleKind>(&json).unwrap(), k);
        }
        let e = "pipedream".parse::<ScheduleKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown schedule \"pipedream\"; choose one of gpipe, 1f1b, interleaved, zb-h1"
        );
    }
}
