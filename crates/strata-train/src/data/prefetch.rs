//! A bounded look-ahead queue: worker threads produce the values of indices `k, k+1, …`
//! ahead of the consumer, never holding more than `depth` values (finished or in progress)
//! that the consumer has not taken yet.
//!
//! Written here rather than taken from a channel crate because the consumer asks for
//! specific indices: asking for one outside the window (an evaluation batch, a resumed run)
//! restarts the window there, and results of the old window are dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The function a worker runs for index `k`.
pub type Produce<T> = Arc<dyn Fn(u64) -> T + Send + Sync>;

struct State<T> {
    /// The next index the consumer is expected to ask for.
    next: u64,
    /// The next index a worker will take.
    issued: u64,
    /// Window generation: bumped when the consumer jumps, so stale results are dropped.
    generation: u64,
    /// Values being produced now.
    in_flight: usize,
    ready: BTreeMap<u64, T>,
    shutdown: bool,
    /// A worker's `produce` panicked: the consumer panics too instead of waiting forever.
    failed: bool,
    /// Largest number of values held at once (finished + in progress), for tests.
    peak: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    depth: usize,
}

/// Worker threads producing values a bounded number of indices ahead of the consumer.
pub struct Prefetch<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// `workers` threads run `produce` for indices from `start` on, at most `depth` (≥ 1)
    /// values held before the consumer takes them.
    pub fn new(workers: usize, depth: usize, start: u64, produce: Produce<T>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next: start,
                issued: start,
                generation: 0,
                in_flight: 0,
                ready: BTreeMap::new(),
                shutdown: false,
                failed: false,
                peak: 0,
            }),
            cv: Condvar::new(),
            depth: depth.max(1),
        });
        let workers = (0..workers.max(1))
            .map(|_| {
                let sh = shared.clone();
                let f = produce.clone();
                std::thread::spawn(move || worker(&sh, &*f))
            })
            .collect();
        Self { shared, workers }
    }

    /// The value of index `k`, waiting for it if needed. Asking for the index after the
    /// previous one keeps the look-ahead; any other index restarts it at `k`.
    pub fn get(&self, k: u64) -> T {
        let sh = &*self.shared;
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        if k != st.next && !st.ready.contains_key(&k) {
            st.generation += 1;
            st.ready.clear();
            st.next = k;
            st.issued = k;
            sh.cv.notify_all();
        }
        loop {
            if let Some(v) = st.ready.remove(&k) {
                // everything before k is no longer wanted
                st.ready.retain(|&j, _| j > k);
                st.next = k + 1;
                if st.issued < st.next {
                    st.issued = st.next;
                }
                sh.cv.notify_all();
                return v;
            }
            if st.failed {
                panic!("a prefetch worker panicked while producing a value");
            }
            st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The most values held at once so far (finished and in progress, not yet taken).
    pub fn peak_held(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peak
    }

    /// The bound on values held.
    pub fn depth(&self) -> usize {
        self.shared.depth
    }
}

fn worker<T>(sh: &Shared<T>, produce: &(dyn Fn(u64) -> T + Send + Sync)) {
    loop {
        let (k, generation) = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if st.shutdown {
                    return;
                }
                let held = st.in_flight + st.ready.len();
                if held < sh.depth && st.issued < st.next + sh.depth as u64 {
                    break;
                }
                st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let k = st.issued;
            st.issued += 1;
            st.in_flight += 1;
            let held = st.in_flight + st.ready.len();
            st.peak = st.peak.max(held);
            (k, st.generation)
        };
        let v = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(k))) {
            Ok(v) => v,
            Err(_) => {
                sh.state.lock().unwrap_or_else(|e| e.into_inner()).failed = true;
                sh.cv.notify_all();
                return;
            }
        };
        let stale = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            st.in_flight -= 1;
            if st.generation == generation && k >= st.next {
                st.ready.insert(k, v);
                None
            } else {
                Some(v)
            }
        };
        // a result of an abandoned window is dropped outside the lock
        drop(stale);
        sh.cv.notify_all();
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.shutdown = true;
            st.ready.clear();
        }
        self.shared.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts live values: +1 when made, −1 when dropped.
    struct Tracked {
        k: u64,
        live: Arc<AtomicUsize>,
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn never_holds_more_than_its_bound_and_returns_values_in_order() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (live.clone(), peak.clone());
        let q = Prefetch::new(
            4,
            3,
            0,
            Arc::new(move |k| {
                let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                Tracked { k, live: l.clone() }
            }),
        );
        for k in 0..40 {
            // a slow consumer: the workers run ahead until the bound stops them
            std::thread::sleep(Duration::from_millis(3));
            let v = q.get(k);
            assert_eq!(v.k, k);
            drop(v);
        }
        // what the queue holds never passes 3; the consumer held at most one more
        assert_eq!(q.peak_held(), 3, "the look-ahead should fill its bound");
        assert!(peak.load(Ordering::SeqCst) <= 4, "{peak:?}");
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_jump_restarts_the_window_and_going_back_works() {
        let q = Prefetch::new(2, 2, 5, Arc::new(|k| k * 10));
        assert_eq!(q.get(5), 50);
        assert_eq!(q.get(6), 60);
        assert_eq!(q.get(1000), 10_000);
        assert_eq!(q.get(1001), 10_010);
        assert_eq!(q.get(0), 0);
        assert!(q.peak_held() <= 2);
    }

    #[test]
    fn a_panicking_worker_makes_the_consumer_panic_instead_of_hanging() {
        let q = Prefetch::new(
            1,
            2,
            0,
            Arc::new(|k| if k == 1 { panic!("boom") } else { k }),
        );
        assert_eq!(q.get(0), 0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.get(1)));
        assert!(r.is_err());
    }
}
