//! The simulated runtime: a single-threaded executor that polls ready tasks in a seeded
//! order, a virtual clock that jumps to the next timer deadline when no task is ready, and
//! resettable timers on that clock. [`SimRuntime`] is the [`Runtime`] the driver sees.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant as StdInstant};

use sotto_driver::{BoxTask, Runtime, TaskGuard, TaskHandle, Timer};
use sotto_tests::SimRng;

/// The id of the future [`Sim::run`] drives (not a spawned task).
const MAIN: u64 = 0;

/// How a [`Sim`] schedules.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SimOptions {
    /// Seed of every choice the executor makes (task order, time per poll, jitter seeds).
    pub seed: u64,
    /// Poll ready tasks first in, first out instead of in a seeded random order.
    pub fifo: bool,
    /// Each poll advances the clock by a seeded amount up to this (a CPU that takes time);
    /// zero keeps time still while tasks are ready.
    pub max_poll_time: Duration,
    /// A run that has not finished by this much virtual time is reported as a hang.
    pub time_limit: Duration,
    /// A run that takes more polls than this is reported as a livelock.
    pub poll_limit: u64,
}

impl SimOptions {
    /// Seeded random order, up to 20 µs per poll, 10 virtual minutes, 5 million polls.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            fifo: false,
            max_poll_time: Duration::from_micros(20),
            time_limit: Duration::from_secs(600),
            poll_limit: 5_000_000,
        }
    }
}

/// Why a run did not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stuck {
    /// Nothing was runnable and no timer was armed while the run's work remained.
    Hang {
        /// Virtual time since the start.
        at: Duration,
        /// Spawned tasks still alive.
        tasks: usize,
    },
    /// The virtual clock passed [`SimOptions::time_limit`].
    TimeLimit {
        /// Spawned tasks still alive.
        tasks: usize,
    },
    /// More than [`SimOptions::poll_limit`] polls.
    PollLimit {
        /// Virtual time since the start.
        at: Duration,
    },
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hang { at, tasks } => {
                write!(f, "hang at {at:?}: nothing runnable, no timer armed, {tasks} tasks alive")
            }
            Self::TimeLimit { tasks } => write!(f, "time limit passed with {tasks} tasks alive"),
            Self::PollLimit { at } => write!(f, "poll limit passed at {at:?} (livelock)"),
        }
    }
}

/// A spawned task's slot: its future, absent while it is being polled.
struct Slot {
    future: Option<BoxTask>,
    /// Cancelled while it was being polled: drop it after the poll.
    cancelled: bool,
}

/// Everything behind the executor's lock.
struct State {
    base: StdInstant,
    now: Duration,
    tasks: BTreeMap<u64, Slot>,
    ready: Vec<u64>,
    queued: BTreeSet<u64>,
    /// Armed timers by (deadline, timer id).
    timers: BTreeMap<(Duration, u64), Waker>,
    next_id: u64,
    rng: SimRng,
    polls: u64,
}

/// The executor's shared state.
pub(crate) struct World {
    state: Mutex<State>,
    options: SimOptions,
}

impl World {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake_task(&self, id: u64) {
        let mut s = self.lock();
        if (id == MAIN || s.tasks.contains_key(&id)) && s.queued.insert(id) {
            s.ready.push(id);
        }
    }

    /// The virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.lock().now
    }

    /// A value from the executor's generator.
    pub(crate) fn random(&self) -> u64 {
        self.lock().rng.next_u64()
    }

    fn fresh_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        s.next_id
    }
}

struct TaskWaker {
    id: u64,
    world: Weak<World>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(w) = self.world.upgrade() {
            w.wake_task(self.id);
        }
    }
}

/// A deterministic simulation: owns the executor; [`runtime`](Self::runtime) gives the
/// [`Runtime`] to hand to the driver.
pub struct Sim {
    world: Arc<World>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("seed", &self.world.options.seed).finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation scheduling by `options`, its clock at zero.
    #[must_use]
    pub fn new(options: SimOptions) -> Self {
        let state = State {
            base: StdInstant::now(),
            now: Duration::ZERO,
            tasks: BTreeMap::new(),
            ready: Vec::new(),
            queued: BTreeSet::new(),
            timers: BTreeMap::new(),
            next_id: MAIN,
            rng: SimRng::new(options.seed),
            polls: 0,
        };
        Self { world: Arc::new(World { state: Mutex::new(state), options }) }
    }

    /// The runtime to give the driver (and the application's own tasks).
    #[must_use]
    pub fn runtime(&self) -> SimRuntime {
        SimRuntime { world: Arc::clone(&self.world) }
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.world.elapsed()
    }

    /// Spawned tasks alive now.
    #[must_use]
    pub fn tasks(&self) -> usize {
        self.world.lock().tasks.len()
    }

    /// Polls so far.
    #[must_use]
    pub fn polls(&self) -> u64 {
        self.world.lock().polls
    }

    /// Run `main` and the tasks it spawns until `main` completes.
    ///
    /// # Errors
    /// [`Stuck`] when nothing can run and no timer is armed before `main` completes (a
    /// hang), or a limit of [`SimOptions`] passes.
    pub fn run<F: Future>(&self, main: F) -> Result<F::Output, Stuck> {
        let mut main = std::pin::pin!(main);
        let waker = Waker::from(Arc::new(TaskWaker { id: MAIN, world: Arc::downgrade(&self.world) }));
        self.world.wake_task(MAIN);
        loop {
            let Some(id) = self.next_ready()? else {
                return Err(Stuck::Hang { at: self.elapsed(), tasks: self.tasks() });
            };
            if id == MAIN {
                if let Poll::Ready(v) = main.as_mut().poll(&mut Context::from_waker(&waker)) {
                    return Ok(v);
                }
            } else {
                self.poll_task(id);
            }
        }
    }

    /// Run the spawned tasks until every one has finished (quiescence).
    ///
    /// # Errors
    /// [`Stuck`] if tasks remain with nothing runnable and no timer armed, or a limit passes.
    pub fn run_to_quiescence(&self) -> Result<(), Stuck> {
        while self.tasks() > 0 {
            let Some(id) = self.next_ready()? else {
                return Err(Stuck::Hang { at: self.elapsed(), tasks: self.tasks() });
            };
            if id != MAIN {
                self.poll_task(id);
            }
        }
        Ok(())
    }

    /// The next task to poll, advancing the clock to the next timer when none is ready;
    /// `None` when nothing is ready and no timer is armed.
    fn next_ready(&self) -> Result<Option<u64>, Stuck> {
        let opts = self.world.options;
        let fired = {
            let mut s = self.world.lock();
            s.polls += 1;
            if s.polls > opts.poll_limit {
                return Err(Stuck::PollLimit { at: s.now });
            }
            if !opts.max_poll_time.is_zero() {
                let step = s.rng.below(opts.max_poll_time.as_nanos() as u64 + 1);
                s.now += Duration::from_nanos(step);
            }
            if s.ready.is_empty() {
                let Some((&(at, _), _)) = s.timers.first_key_value() else { return Ok(None) };
                s.now = s.now.max(at);
            }
            if s.now > opts.time_limit {
                return Err(Stuck::TimeLimit { tasks: s.tasks.len() });
            }
            let now = s.now;
            crate::trace::set_now(now);
            let mut fired = Vec::new();
            while let Some(e) = s.timers.first_entry() {
                if e.key().0 > now {
                    break;
                }
                fired.push(e.remove());
            }
            fired
        };
        for w in fired {
            w.wake();
        }
        let mut s = self.world.lock();
        if s.ready.is_empty() {
            // Timers fired for tasks that are gone: look again.
            drop(s);
            return self.next_ready();
        }
        let len = s.ready.len() as u64;
        let i = if opts.fifo { 0 } else { s.rng.below(len) as usize };
        let id = if opts.fifo { s.ready.remove(0) } else { s.ready.swap_remove(i) };
        s.queued.remove(&id);
        Ok(Some(id))
    }

    fn poll_task(&self, id: u64) {
        let Some(mut future) = self.world.lock().tasks.get_mut(&id).and_then(|slot| slot.future.take()) else {
            return;
        };
        let waker = Waker::from(Arc::new(TaskWaker { id, world: Arc::downgrade(&self.world) }));
        let done = future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
        let drop_it = {
            let mut s = self.world.lock();
            match s.tasks.get_mut(&id) {
                Some(slot) if !done && !slot.cancelled => {
                    slot.future = Some(future);
                    None
                }
                _ => {
                    s.tasks.remove(&id);
                    Some(future)
                }
            }
        };
        drop(drop_it);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Drop every task (outside the lock: their drops reach the executor).
        loop {
            let next = {
                let mut s = self.world.lock();
                s.timers.clear();
                s.tasks.pop_first()
            };
            match next {
                Some((_, slot)) => drop(slot.future),
                None => break,
            }
        }
    }
}

/// The simulated [`Runtime`]: spawns on the [`Sim`]'s executor, tells its virtual time,
/// makes timers on it.
#[derive(Clone)]
pub struct SimRuntime {
    world: Arc<World>,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime").finish_non_exhaustive()
    }
}

impl SimRuntime {
    /// Spawn an application task; its output arrives through the returned [`JoinHandle`].
    /// The task runs on even if the handle is dropped ([`JoinHandle::abort`] cancels it).
    pub fn spawn_app<T, F>(&self, future: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(JoinSlot { value: None, waker: None }));
        let out = Arc::clone(&slot);
        let task = Box::pin(async move {
            let v = future.await;
            let mut g = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            g.value = Some(v);
            if let Some(w) = g.waker.take() {
                w.wake();
            }
        });
        JoinHandle { slot, guard: Some(self.spawn(task)) }
    }

    /// Wait `d` of virtual time.
    pub async fn sleep(&self, d: Duration) {
        let mut t = self.timer();
        t.reset(self.now() + d);
        std::future::poll_fn(|cx| t.poll_expired(cx)).await;
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.world.elapsed()
    }

    /// A value from the executor's seeded generator.
    #[must_use]
    pub fn random(&self) -> u64 {
        self.world.random()
    }
}

struct JoinSlot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The output of a task spawned with [`SimRuntime::spawn_app`].
pub struct JoinHandle<T> {
    slot: Arc<Mutex<JoinSlot<T>>>,
    guard: Option<TaskGuard>,
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.detach();
        }
    }
}

impl<T> JoinHandle<T> {
    /// Cancel the task (drop its future) unless it has finished.
    pub fn abort(mut self) {
        drop(self.guard.take());
    }

    /// The output, if the task has finished (taken once).
    #[must_use]
    pub fn try_take(&self) -> Option<T> {
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).value.take()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut g = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A spawned task: dropping it cancels the task unless detached.
struct SimTask {
    id: u64,
    world: Weak<World>,
    detached: bool,
}

impl TaskHandle for SimTask {
    fn detach(mut self: Box<Self>) {
        self.detached = true;
    }
}

impl Drop for SimTask {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let Some(world) = self.world.upgrade() else { return };
        let future = {
            let mut s = world.lock();
            match s.tasks.get_mut(&self.id) {
                // Being polled now: dropped after its poll.
                Some(slot) if slot.future.is_none() => {
                    slot.cancelled = true;
                    None
                }
                Some(_) => s.tasks.remove(&self.id).and_then(|slot| slot.future),
                None => None,
            }
        };
        drop(future);
    }
}

impl Runtime for SimRuntime {
    type Timer = SimTimer;

    fn spawn(&self, task: BoxTask) -> TaskGuard {
        let id = self.world.fresh_id();
        {
            let mut s = self.world.lock();
            s.tasks.insert(id, Slot { future: Some(task), cancelled: false });
            s.queued.insert(id);
            s.ready.push(id);
        }
        Box::new(SimTask { id, world: Arc::downgrade(&self.world), detached: false })
    }

    fn timer(&self) -> SimTimer {
        SimTimer { world: Arc::downgrade(&self.world), id: self.world.fresh_id(), at: None, armed: None }
    }

    fn now(&self) -> StdInstant {
        let s = self.world.lock();
        s.base + s.now
    }

    fn jitter_seed(&self) -> u64 {
        self.world.random()
    }
}

/// A timer on the virtual clock.
pub struct SimTimer {
    world: Weak<World>,
    id: u64,
    at: Option<Duration>,
    /// The key of its registration with the executor, if any.
    armed: Option<(Duration, u64)>,
}

impl std::fmt::Debug for SimTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTimer").field("at", &self.at).finish_non_exhaustive()
    }
}

impl SimTimer {
    fn disarm(&mut self, s: &mut State) {
        if let Some(key) = self.armed.take() {
            s.timers.remove(&key);
        }
    }
}

impl Timer for SimTimer {
    fn reset(&mut self, at: StdInstant) {
        let Some(world) = self.world.upgrade() else { return };
        let mut s = world.lock();
        let at = at.saturating_duration_since(s.base);
        self.at = Some(at);
        if self.armed.is_some_and(|k| k.0 != at) {
            self.disarm(&mut s);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else { return Poll::Pending };
        let Some(world) = self.world.upgrade() else { return Poll::Pending };
        let mut s = world.lock();
        if s.now >= at {
            self.disarm(&mut s);
            return Poll::Ready(());
        }
        let key = (at, self.id);
        s.timers.insert(key, cx.waker().clone());
        self.armed = Some(key);
        Poll::Pending
    }
}

impl Drop for SimTimer {
    fn drop(&mut self) {
        if let Some(world) = self.world.upgrade() {
            let mut s = world.lock();
            self.disarm(&mut s);
        }
    }
}
