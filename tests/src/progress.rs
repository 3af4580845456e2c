//! Progress lines for long runs (the benchmark, the chaos runners): one line on stderr when a
//! phase starts and one when it ends, with its elapsed time, so a run that takes minutes
//! says what it is doing. Stderr keeps stdout for the report itself.

use std::time::Instant;

/// One phase of a long run, announced when it starts; [`Phase::done`] reports its time.
///
/// Dropping a phase without `done` (a panic, an interrupted run) prints nothing: only a
/// finished phase says it finished.
#[derive(Debug)]
#[must_use = "call `done()` when the phase ends"]
pub struct Phase {
    /// Who is speaking: `bench`, `chaos`, `chaos-synapse`.
    tool: &'static str,
    /// What the phase does, as printed at its start.
    what: String,
    /// When it started.
    started: Instant,
}

impl Phase {
    /// Prints `<tool>: <what>…` and starts the clock.
    pub fn start(tool: &'static str, what: impl Into<String>) -> Phase {
        let what = what.into();
        eprintln!("{tool}: {what}…");
        Phase {
            tool,
            what,
            started: Instant::now(),
        }
    }

    /// Prints `<tool>: <what>: done in <elapsed>`.
    pub fn done(self) {
        self.done_with("");
    }

    /// As [`Phase::done`], with a short result after the time (`"; 1,000 messages"`).
    pub fn done_with(self, result: &str) {
        eprintln!(
            "{}: {}: done in {}{result}",
            self.tool,
            self.what,
            elapsed(self.started)
        );
    }
}

/// Elapsed time since `since` for a person: `850 ms`, `12.3 s`, `4 min 05 s`.
fn elapsed(since: Instant) -> String {
    let took = since.elapsed();
    let secs = took.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", took.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = took.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn elapsed_reads_as_milliseconds_seconds_or_minutes() {
        let ago = |d: Duration| Instant::now().checked_sub(d).expect("a moment ago");
        assert!(elapsed(ago(Duration::from_millis(5))).ends_with(" ms"));
        let seconds = elapsed(ago(Duration::from_millis(12_300)));
        assert!(
            seconds.starts_with("12.") && seconds.ends_with(" s"),
            "{seconds}"
        );
        let minutes = elapsed(ago(Duration::from_secs(245)));
        assert!(
            minutes.starts_with("4 min 0") && minutes.ends_with(" s"),
            "{minutes}"
        );
    }
}
