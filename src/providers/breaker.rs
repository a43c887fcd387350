//! The circuit-breaker state machine that guards calls to an image provider.
//!
//! This module owns the Closed → Open → Half-open → Closed cycle and nothing else: how many
//! consecutive counted failures open the breaker, how long it stays open, and the rule that a
//! half-open breaker lets exactly one probe call through.
//! It must not know what a provider, a request or an error is, must not log, and must not sleep
//! or spawn anything. The `CircuitBreaker<E: ImageEditor>` decorator in `providers/` decides which
//! outcomes count as failures and logs the [`Transition`]s this module hands back.
//!
//! Time is [`tokio::time::Instant`], so tests drive the machine with `tokio::time::pause()` and
//! `tokio::time::advance()` instead of sleeping, and production reads the monotonic clock.
//! Outside a tokio runtime the same `Instant::now()` falls back to the system's monotonic clock.
//!
//! ```text
//!            threshold consecutive failures
//!   Closed ─────────────────────────────────▶ Open
//!     ▲                                        │ open_for elapsed, next try_acquire
//!     │ probe succeeds                         ▼
//!     └──────────────────────────────────── Half-open ──probe fails──▶ Open (another open_for)
//! ```
//!
//! A caller that takes a [`Permit`] reports one verdict: [`Permit::success`], [`Permit::failure`]
//! or [`Permit::ignore`]. Dropping a permit without a verdict is the same as `ignore`, so a
//! cancelled call can never wedge the breaker in half-open.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Tuning for one [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive counted failures, while closed, that open the breaker.
    /// A value of 0 is treated as 1, because a breaker that opens without any failure is useless.
    pub threshold: u32,
    /// How long the breaker rejects calls once open, and how long a half-open probe may stay in
    /// flight before the breaker gives up on it and hands out a new probe.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    /// Five consecutive failures and one minute open, the worker's documented defaults.
    fn default() -> Self {
        Self {
            threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// The externally visible state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; consecutive failures are being counted.
    Closed,
    /// Calls are rejected until `open_for` has elapsed.
    Open,
    /// One probe call decides whether the breaker closes or opens again.
    HalfOpen,
}

impl BreakerState {
    /// A stable, low-cardinality label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A state change, handed back to the caller so it can log it once, where it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// When it is worth asking again: the rest of the open period, or, while a probe is in
    /// flight, the rest of that probe's lease.
    pub retry_after: Duration,
}

/// The longest accepted `open_for`. Larger values are clamped so that `Instant + open_for` can
/// never overflow, whatever the configuration says.
const MAX_OPEN_FOR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A thread-safe circuit breaker. Cloning is cheap and clones share state.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// Permission to make one call. Report the outcome with exactly one of [`Permit::success`],
/// [`Permit::failure`] or [`Permit::ignore`]; dropping it counts as `ignore`.
#[must_use = "a permit must be given a verdict (success, failure or ignore)"]
pub struct Permit {
    shared: Arc<Shared>,
    /// The machine's generation when this permit was issued. A verdict only applies if the
    /// generation still matches, so a slow call that started before the breaker opened cannot
    /// close it or extend it later.
    generation: u64,
    role: Role,
    /// The transition that handing out this permit caused (Open → Half-open for a probe).
    transition: Option<Transition>,
    settled: bool,
}

impl CircuitBreaker {
    /// A breaker with the given settings, closed.
    pub fn new(settings: BreakerSettings) -> Self {
        let settings = BreakerSettings {
            threshold: settings.threshold.max(1),
            open_for: settings.open_for.min(MAX_OPEN_FOR),
        };
        Self {
            shared: Arc::new(Shared {
                settings,
                machine: Mutex::new(Machine {
                    phase: Phase::Closed {
                        consecutive_failures: 0,
                    },
                    generation: 0,
                }),
            }),
        }
    }

    /// Asks to make one call.
    ///
    /// Closed: always allowed. Open: rejected until `open_for` has elapsed. After that the
    /// breaker is half-open and exactly one caller gets the probe permit; everybody else is
    /// rejected until the probe reports, is dropped, or outlives its lease of `open_for`.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let open_for = self.shared.settings.open_for;
        let mut machine = self.shared.lock();
        let (role, transition) = match machine.phase {
            Phase::Closed { .. } => (Role::Closed, None),
            Phase::Open { until } if now < until => {
                return Err(BreakerOpen {
                    retry_after: until.saturating_duration_since(now),
                });
            }
            Phase::Open { .. } => (
                Role::Probe,
                Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                }),
            ),
            Phase::HalfOpen {
                probe_started: Some(started),
            } if now < started + open_for => {
                return Err(BreakerOpen {
                    retry_after: (started + open_for).saturating_duration_since(now),
                });
            }
            // No probe in flight, or the previous probe's lease expired: issue a new one.
            Phase::HalfOpen { .. } => (Role::Probe, None),
        };
        if role == Role::Probe {
            machine.generation += 1;
            machine.phase = Phase::HalfOpen {
                probe_started: Some(now),
            };
        }
        let generation = machine.generation;
        drop(machine);
        Ok(Permit {
            shared: Arc::clone(&self.shared),
            generation,
            role,
            transition,
            settled: false,
        })
    }

    /// The current state, for metrics. An open breaker whose `open_for` has elapsed reports
    /// half-open even before the next `try_acquire` hands out the probe.
    pub fn state(&self) -> BreakerState {
        let now = Instant::now();
        match self.shared.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The settings in effect (`threshold` raised to at least 1, `open_for` clamped to
    /// `MAX_OPEN_FOR`).
    pub fn settings(&self) -> BreakerSettings {
        self.shared.settings
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CircuitBreaker")
            .field("settings", &self.shared.settings)
            .field("state", &self.state())
            .finish()
    }
}

impl Permit {
    /// Whether this permit is the single half-open probe.
    fn is_probe(&self) -> bool {
        self.role == Role::Probe
    }

    /// The transition caused by handing out this permit: `Open → HalfOpen` for the first probe
    /// after an open period, otherwise `None`.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// The call worked. Closes a half-open breaker and resets the failure count.
    pub fn success(mut self) -> Option<Transition> {
        self.settled = true;
        self.shared.settle(self.generation, self.role, Verdict::Success)
    }

    /// The call failed in a way that counts against the provider (timeouts, 5xx, connection
    /// errors). Opens the breaker at the threshold, and re-opens it when the probe fails.
    pub fn failure(mut self) -> Option<Transition> {
        self.settled = true;
        self.shared.settle(self.generation, self.role, Verdict::Failure)
    }

    /// The outcome says nothing about the provider's health (for example the job's own bad
    /// request). Neither counts nor resets; a probe gives its half-open slot back.
    pub fn ignore(mut self) {
        self.settled = true;
        self.shared.settle(self.generation, self.role, Verdict::Neutral);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.settle(self.generation, self.role, Verdict::Neutral);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Permit")
            .field("generation", &self.generation)
            .field("probe", &self.is_probe())
            .field("transition", &self.transition)
            .finish()
    }
}

struct Shared {
    settings: BreakerSettings,
    machine: Mutex<Machine>,
}

struct Machine {
    phase: Phase,
    /// Bumped on every state change and every probe issued; see [`Permit::generation`].
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_started` is `Some` while a probe permit is outstanding.
    HalfOpen {
        probe_started: Option<Instant>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Closed,
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Neutral,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        lock_ignoring_poison(&self.machine)
    }

    fn settle(&self, generation: u64, role: Role, verdict: Verdict) -> Option<Transition> {
        let now = Instant::now();
        let mut machine = self.lock();
        if machine.generation != generation {
            // A verdict from an earlier phase (or an expired probe) says nothing about now.
            return None;
        }
        let open_until = now + self.settings.open_for;
        match (machine.phase, role, verdict) {
            (Phase::Closed { .. }, Role::Closed, Verdict::Success) => {
                machine.phase = Phase::Closed {
                    consecutive_failures: 0,
                };
                None
            }
            (Phase::Closed { consecutive_failures }, Role::Closed, Verdict::Failure) => {
                let consecutive_failures = consecutive_failures.saturating_add(1);
                if consecutive_failures >= self.settings.threshold {
                    machine.enter(Phase::Open { until: open_until });
                    Some(Transition {
                        from: BreakerState::Closed,
                        to: BreakerState::Open,
                    })
                } else {
                    machine.phase = Phase::Closed { consecutive_failures };
                    None
                }
            }
            (Phase::HalfOpen { .. }, Role::Probe, Verdict::Success) => {
                machine.enter(Phase::Closed {
                    consecutive_failures: 0,
                });
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                })
            }
            (Phase::HalfOpen { .. }, Role::Probe, Verdict::Failure) => {
                machine.enter(Phase::Open { until: open_until });
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open,
                })
            }
            (Phase::HalfOpen { .. }, Role::Probe, Verdict::Neutral) => {
                machine.phase = Phase::HalfOpen { probe_started: None };
                None
            }
            // Neutral closed-state outcomes, and role/phase combinations that the generation
            // check already rules out.
            _ => None,
        }
    }
}

impl Machine {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }
}

/// Every critical section leaves the state consistent before it could panic, so a poisoned
/// lock still guards valid data and recovering it is safe.
fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    const OPEN_FOR: Duration = Duration::from_secs(60);

    /// A closed breaker. Tests that move time run on a paused tokio clock
    /// (`start_paused = true`) and call `tokio::time::advance`, which the breaker reads through
    /// `tokio::time::Instant::now()`.
    fn closed_breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            threshold,
            open_for: OPEN_FOR,
        })
    }

    fn fail(breaker: &CircuitBreaker) -> Option<Transition> {
        breaker.try_acquire().expect("breaker should allow").failure()
    }

    fn open(breaker: &CircuitBreaker) {
        for _ in 0..breaker.settings().threshold {
            let _ = fail(breaker);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    fn transition(from: BreakerState, to: BreakerState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    #[test]
    fn defaults_are_five_failures_and_sixty_seconds() {
        let settings = BreakerSettings::default();
        assert_eq!(settings.threshold, 5);
        assert_eq!(settings.open_for, Duration::from_secs(60));
        assert_eq!(CircuitBreaker::new(settings).state(), BreakerState::Closed);
    }

    #[test]
    fn opens_exactly_at_threshold_consecutive_failures() {
        let breaker = closed_breaker(5);
        for _ in 0..4 {
            assert_eq!(fail(&breaker), None);
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        assert_eq!(fail(&breaker), transition(BreakerState::Closed, BreakerState::Open));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn success_resets_the_consecutive_failure_count() {
        let breaker = closed_breaker(3);
        let _ = fail(&breaker);
        let _ = fail(&breaker);
        assert_eq!(breaker.try_acquire().expect("closed").success(), None);
        let _ = fail(&breaker);
        let _ = fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let _ = fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_breaker_rejects_with_remaining_time() {
        let breaker = closed_breaker(1);
        open(&breaker);
        assert_eq!(
            breaker.try_acquire().unwrap_err(),
            BreakerOpen { retry_after: OPEN_FOR }
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after, Duration::from_secs(40));
        tokio::time::advance(Duration::from_secs(39)).await;
        assert!(breaker.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn state_reports_half_open_once_open_period_elapsed() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn first_acquire_after_open_period_is_the_probe_and_reports_half_open() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        assert!(probe.is_probe());
        assert_eq!(
            probe.transition(),
            transition(BreakerState::Open, BreakerState::HalfOpen)
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let rejected = breaker.try_acquire().unwrap_err();
        assert_eq!(rejected.retry_after, OPEN_FOR);
        probe.ignore();
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_hands_out_exactly_one_probe_under_concurrency() {
        const THREADS: usize = 32;
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let barrier = Barrier::new(THREADS);
        // Each thread enters the test's runtime so it reads the same paused clock; a thread
        // outside any runtime would read the system clock, on which the breaker is still open.
        let runtime = tokio::runtime::Handle::current();
        let outcomes: Vec<Result<Permit, BreakerOpen>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let _runtime = runtime.enter();
                        barrier.wait();
                        breaker.try_acquire()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("thread panicked"))
                .collect()
        });
        // All permits are still alive here, so a second probe would have been visible.
        let probes: Vec<&Permit> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(probes.len(), 1);
        assert!(probes[0].is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes_and_resets_the_count() {
        let breaker = closed_breaker(2);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        assert_eq!(
            probe.success(),
            transition(BreakerState::HalfOpen, BreakerState::Closed)
        );
        assert_eq!(breaker.state(), BreakerState::Closed);
        let permit = breaker.try_acquire().expect("closed allows");
        assert!(!permit.is_probe());
        assert_eq!(permit.failure(), None, "one failure is below threshold 2");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_another_full_period() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(probe.failure(), transition(BreakerState::HalfOpen, BreakerState::Open));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after, OPEN_FOR);
        tokio::time::advance(OPEN_FOR - Duration::from_secs(1)).await;
        assert!(breaker.try_acquire().is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.try_acquire().expect("next probe").is_probe());
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_reset() {
        let breaker = closed_breaker(3);
        let _ = fail(&breaker);
        let _ = fail(&breaker);
        for _ in 0..10 {
            breaker.try_acquire().expect("closed").ignore();
            drop(breaker.try_acquire().expect("closed"));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(
            fail(&breaker),
            transition(BreakerState::Closed, BreakerState::Open),
            "ignored outcomes must not have reset the two earlier failures"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_releases_the_half_open_slot() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        assert!(breaker.try_acquire().is_err());
        drop(probe);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let next = breaker.try_acquire().expect("slot released");
        assert!(next.is_probe());
        assert_eq!(next.transition(), None, "still half-open, no new transition");
        assert_eq!(next.success(), transition(BreakerState::HalfOpen, BreakerState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_probe_releases_the_half_open_slot() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        breaker.try_acquire().expect("probe").ignore();
        assert!(breaker.try_acquire().expect("slot released").is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn leaked_probe_is_replaced_after_its_lease_and_its_verdict_is_ignored() {
        let breaker = closed_breaker(1);
        open(&breaker);
        tokio::time::advance(OPEN_FOR).await;
        let stuck = breaker.try_acquire().expect("probe");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let replacement = breaker.try_acquire().expect("lease expired");
        assert!(replacement.is_probe());
        assert_eq!(stuck.failure(), None, "stale probe verdict is ignored");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(
            replacement.success(),
            transition(BreakerState::HalfOpen, BreakerState::Closed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_from_before_the_breaker_opened_are_ignored() {
        let breaker = closed_breaker(2);
        let slow_call = breaker.try_acquire().expect("closed");
        open(&breaker);
        assert_eq!(slow_call.success(), None);
        assert_eq!(breaker.state(), BreakerState::Open, "old success must not close");

        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        let _ = probe.success();
        let late_failure = breaker.try_acquire().expect("closed");
        let _ = fail(&breaker);
        let _ = fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(OPEN_FOR).await;
        let probe = breaker.try_acquire().expect("probe");
        assert_eq!(late_failure.failure(), None, "old failure must not re-open");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        probe.ignore();
    }

    #[test]
    fn zero_threshold_behaves_as_one() {
        let breaker = closed_breaker(0);
        assert_eq!(breaker.settings().threshold, 1);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(fail(&breaker), transition(BreakerState::Closed, BreakerState::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn huge_open_for_is_clamped_instead_of_overflowing() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            threshold: 1,
            open_for: Duration::MAX,
        });
        assert_eq!(breaker.settings().open_for, MAX_OPEN_FOR);
        let _ = fail(&breaker);
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after, MAX_OPEN_FOR);
    }

    #[test]
    fn state_labels_are_stable() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
    }
}
