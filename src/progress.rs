//! Progress of a converging one-shot run on a terminal, and a log writer that keeps log lines
//! from tearing the progress bar.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Shows a bar "converged N/M" on stderr if it is a terminal. Returns whether it is shown.
pub fn start() -> bool {
    if !std::io::stderr().is_terminal() {
        return false;
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} converging [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    BAR.set(bar).is_ok()
}

/// Updates the bar: `done` of `total` resources settled, `msg` beside it.
pub fn update(done: usize, total: usize, msg: String) {
    if let Some(bar) = BAR.get() {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(msg);
    }
}

/// Removes the bar.
pub fn finish() {
    if let Some(bar) = BAR.get() {
        bar.finish_and_clear();
    }
}

/// A `tracing_subscriber` writer for stderr that suspends the progress bar around each line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A log line is one write: secrets read by the program are masked in it.
        if tend_model::secrets::any() {
            let text = String::from_utf8_lossy(buf);
            if let std::borrow::Cow::Owned(masked) = tend_model::secrets::redact(&text) {
                self.write_all(masked.as_bytes())?;
                return Ok(buf.len());
            }
        }
        match BAR.get() {
            Some(bar) if !bar.is_finished() => {
                bar.suspend(|| std::io::stderr().write_all(buf))?;
                Ok(buf.len())
            }
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}
