//! A per-[`Gpu`](super::Gpu) cache of values keyed by their type: how layers
//! above the device (the compiled kernels) attach state to a device that must
//! be built once per device, not once per run, without the device layer
//! knowing their types.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// At most one value of each type `T`, built on first request.
#[derive(Default)]
pub(super) struct TypeCache {
    /// `TypeId::of::<T>()` -> `Arc<OnceLock<Arc<T>>>`.
    slots: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl TypeCache {
    /// The value of type `T`, built by `init` if this is the first request.
    ///
    /// The map's lock is held only to find the slot, not while `init` runs, so
    /// `init` may itself ask for values of *other* types; asking for the same
    /// type from inside its own `init` deadlocks (as `OnceLock` does). Two
    /// threads asking at once for a missing `T` run `init` once: the second
    /// waits for the first.
    pub(super) fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry(TypeId::of::<T>())
                .or_insert_with(|| Arc::new(OnceLock::<Arc<T>>::new()))
                .clone()
        };
        let slot = slot
            .downcast::<OnceLock<Arc<T>>>()
            .unwrap_or_else(|_| unreachable!("slots are keyed by the type they hold"));
        slot.get_or_init(|| Arc::new(init())).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn builds_each_type_once() {
        let cache = TypeCache::default();
        let calls = AtomicUsize::new(0);
        let a = cache.get_or_init(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            7u32
        });
        let b = cache.get_or_init(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            8u32
        });
        assert_eq!((*a, *b), (7, 7));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Another type gets its own slot, even when built from inside an init.
        let s = cache.get_or_init(|| format!("{}", cache.get_or_init(|| 1u8)));
        assert_eq!(*s, "1");
        assert_eq!(*cache.get_or_init(|| 9u32), 7);
    }
}
