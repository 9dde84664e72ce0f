//! Progress of long work: indicatif spinners on a terminal, plain lines otherwise, nothing
//! under `-q`. Everything goes to stderr; stdout is kept for results scripts parse.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{BoxStream, StreamExt};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Bars(Arc<MultiProgress>),
    Lines,
    Quiet,
}

/// One step of the work.
pub struct Step {
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// `quiet`: nothing; `no_progress` or stderr not a terminal: plain lines.
    pub fn new(quiet: bool, no_progress: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if no_progress || !std::io::stderr().is_terminal() {
            Mode::Lines
        } else {
            Mode::Bars(Arc::new(MultiProgress::with_draw_target(
                ProgressDrawTarget::stderr(),
            )))
        };
        Progress { mode }
    }

    /// Removes every bar from the terminal (after an interrupt).
    pub fn clear(&self) {
        if let Mode::Bars(multi) = &self.mode {
            let _ = multi.clear();
        }
    }

    /// A step with nothing to do: what it would make is in the store already.
    pub fn cached(&self, name: &str) {
        match &self.mode {
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:.bold} {wide_msg}")
                        .expect("a valid template"),
                );
                bar.set_prefix(name.to_string());
                bar.finish_with_message("cached");
            }
            Mode::Lines => eprintln!("{name}: cached"),
            Mode::Quiet => {}
        }
    }

    pub fn step(&self, name: &str) -> Step {
        match &self.mode {
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg}")
                        .expect("a valid template"),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Step {
                    name: name.to_string(),
                    started: Instant::now(),
                    bar: Some(bar),
                    lines: false,
                }
            }
            Mode::Lines => {
                eprintln!("{name}: started");
                Step {
                    name: name.to_string(),
                    started: Instant::now(),
                    bar: None,
                    lines: true,
                }
            }
            Mode::Quiet => Step {
                name: name.to_string(),
                started: Instant::now(),
                bar: None,
                lines: false,
            },
        }
    }
}

impl Step {
    pub fn message(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    /// A meter of bytes moved under this step: the bar shows `WHAT 12.3 MiB (4.5 MiB/s)`
    /// (of TOTAL when known) as they go; plain lines get one line when the bytes end.
    pub fn meter(&self, what: &str, total: Option<u64>) -> Meter {
        Meter {
            inner: Arc::new(MeterInner {
                step: self.name.clone(),
                what: what.to_string(),
                total,
                bar: self.bar.clone(),
                lines: self.lines,
                started: Instant::now(),
                bytes: AtomicU64::new(0),
                ended: AtomicBool::new(false),
            }),
        }
    }

    pub fn done(self) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.set_style(
                ProgressStyle::with_template("  {prefix:.bold} {wide_msg}")
                    .expect("a valid template"),
            );
            bar.finish_with_message(format!("done in {secs:.1}s"));
        } else if self.lines {
            eprintln!("{}: done in {secs:.1}s", self.name);
        }
    }

    pub fn failed(self) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message("failed");
        } else if self.lines {
            eprintln!("{}: failed", self.name);
        }
    }

    /// Marks the step done or failed by a result, passing the result on.
    pub fn finish<T, E>(self, r: Result<T, E>) -> Result<T, E> {
        match &r {
            Ok(_) => self.done(),
            Err(_) => self.failed(),
        }
        r
    }
}

/// Bytes moved under a step, with their rate (see [`Step::meter`]).
#[derive(Clone)]
pub struct Meter {
    inner: Arc<MeterInner>,
}

struct MeterInner {
    step: String,
    what: String,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    lines: bool,
    started: Instant,
    bytes: AtomicU64,
    ended: AtomicBool,
}

impl Meter {
    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        let m = &self.inner;
        let bytes = m.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &m.bar {
            bar.set_message(self.text(bytes));
        }
    }

    /// The bytes have all moved: one plain line (once), when not drawing bars.
    pub fn end(&self) {
        let m = &self.inner;
        if m.ended.swap(true, Ordering::Relaxed) {
            return;
        }
        if m.lines {
            let bytes = m.bytes.load(Ordering::Relaxed);
            eprintln!(
                "{}: {} in {:.1}s",
                m.step,
                self.text(bytes),
                m.started.elapsed().as_secs_f64()
            );
        }
    }

    fn text(&self, bytes: u64) -> String {
        let m = &self.inner;
        let secs = m.started.elapsed().as_secs_f64().max(0.001);
        let rate = HumanBytes((bytes as f64 / secs) as u64);
        match m.total {
            Some(total) => format!(
                "{} {} of {} ({rate}/s)",
                m.what,
                HumanBytes(bytes),
                HumanBytes(total)
            ),
            None => format!("{} {} ({rate}/s)", m.what, HumanBytes(bytes)),
        }
    }

    /// `stream`, counted as it is read; [`Meter::end`] when it ends.
    pub fn count<T: AsRef<[u8]> + Send + 'static, E: Send + 'static>(
        &self,
        stream: BoxStream<'static, Result<T, E>>,
    ) -> BoxStream<'static, Result<T, E>> {
        let (counting, ending) = (self.clone(), self.clone());
        stream
            .inspect(move |item| {
                if let Ok(chunk) = item {
                    counting.add(chunk.as_ref().len() as u64);
                }
            })
            .chain(futures_util::stream::poll_fn(move |_| {
                ending.end();
                std::task::Poll::Ready(None)
            }))
            .boxed()
    }
}
