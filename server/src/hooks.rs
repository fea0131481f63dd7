//! How the synchronous core tells whoever drives it that something happened (a case changed, the
//! store was reopened, access changed), without knowing who listens or how they wait. The I/O
//! driver ([`crate::driver`]) adds hooks that pass each event on to the channels its tasks await;
//! a test adds hooks that record what it was told.

use std::sync::RwLock;

/// A hook: called with each event.
type Hook<E> = Box<dyn Fn(&E) + Send + Sync>;

/// Functions called, in the order they were added, each time an event happens. Each runs on the
/// thread that made the change, at once: it must be quick and must not block (pass the event on,
/// do not act on it).
pub(crate) struct Hooks<E> {
    hooks: RwLock<Vec<Hook<E>>>,
}

impl<E> Default for Hooks<E> {
    fn default() -> Self {
        Hooks {
            hooks: RwLock::new(Vec::new()),
        }
    }
}

impl<E> Hooks<E> {
    /// Call `hook` with every event from now on.
    pub(crate) fn add(&self, hook: impl Fn(&E) + Send + Sync + 'static) {
        // A hook that panicked left the list as it was: nothing to repair.
        let mut hooks = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        hooks.push(Box::new(hook));
    }

    /// Tell every hook of `event`.
    pub(crate) fn call(&self, event: &E) {
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner());
        for hook in hooks.iter() {
            hook(event);
        }
    }
}
