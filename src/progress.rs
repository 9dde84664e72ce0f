//! Progress of long work: indicatif spinners on a terminal, plain lines otherwise, nothing
//! under `-q`. Everything goes to stderr; stdout is kept for results scripts parse.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
