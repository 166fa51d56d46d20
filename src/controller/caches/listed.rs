//! Which of the controller's watches have delivered their first complete list.

use std::sync::Arc;

use kube::runtime::watcher;
use tokio::sync::watch;

/// The watches whose first list must be in before anything is decided.
#[derive(Clone, Copy, Debug)]
pub enum Watch {
    Experiments = 1,
    Injections = 2,
    Pause = 4,
    Signal = 8,
    Namespaces = 16,
}

const ALL_LISTED: u8 = Watch::Experiments as u8
    | Watch::Injections as u8
    | Watch::Pause as u8
    | Watch::Signal as u8
    | Watch::Namespaces as u8;

/// Which watches have listed, shared between the watch streams and the readers.
#[derive(Clone)]
pub struct Listed(Arc<watch::Sender<u8>>);

impl Default for Listed {
    fn default() -> Self {
        Listed(Arc::new(watch::channel(0).0))
    }
}

impl Listed {
    /// For `inspect` on a watch stream: marks `which` listed at its first `InitDone`.
    pub fn marker<K>(
        &self,
        which: Watch,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let listed = self.0.clone();
        move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                mark(&listed, which);
            }
        }
    }

    /// [`Self::marker`] for a watch this controller may not be allowed: a refused list counts
    /// as listed (nothing to read), so that an older chart's permissions do not hold every
    /// decision back.
    pub fn marker_unless_refused<K>(
        &self,
        which: Watch,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let mut listed_marker = self.marker(which);
        let listed = self.0.clone();
        move |event| {
            if let Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) = event
                && status.code == 403
            {
                mark(&listed, which);
            }
            listed_marker(event);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u8> {
        self.0.subscribe()
    }

    pub fn all(listed: &u8) -> bool {
        *listed == ALL_LISTED
    }
}

/// Marks `which` listed, waking the waiters only the first time.
fn mark(listed: &watch::Sender<u8>, which: Watch) {
    listed.send_if_modified(|l| {
        let before = *l;
        *l |= which as u8;
        *l != before
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::Status;

    use super::*;

    fn refused(code: u16) -> Result<watcher::Event<ConfigMap>, watcher::Error> {
        let mut status = Status::failure("configmaps is forbidden", "Forbidden");
        status.code = code;
        Err(watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(status),
        )))
    }

    #[test]
    fn a_watch_the_controller_may_not_read_counts_as_listed_and_a_failing_one_does_not() {
        let listed = Listed::default();
        let mut signal = listed.marker_unless_refused::<ConfigMap>(Watch::Signal);
        signal(&refused(500));
        assert_eq!(
            *listed.subscribe().borrow(),
            0,
            "a server error is retried, not skipped"
        );
        signal(&refused(403));
        assert_eq!(*listed.subscribe().borrow(), Watch::Signal as u8);

        let strict = Listed::default();
        let mut pause = strict.marker::<ConfigMap>(Watch::Pause);
        pause(&refused(403));
        assert_eq!(
            *strict.subscribe().borrow(),
            0,
            "the pause switch is never skipped"
        );
        pause(&Ok(watcher::Event::InitDone));
        assert_eq!(*strict.subscribe().borrow(), Watch::Pause as u8);
    }
}
