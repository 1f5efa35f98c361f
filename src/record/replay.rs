//! The timing of a replay (`architect replay`): when each piece of output is written.
//! Pure: the caller sleeps and writes.

use std::time::Duration;

use super::asciicast::{Event, EventKind};

/// One piece of output to write, after waiting `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// How long to wait before writing it, since the previous frame was written.
    pub delay: Duration,
    /// The text to write.
    pub data: &'a str,
}

/// The output events of a recording as frames: each waits as long as the recording did
/// since the previous output (the first, since the start), with every gap cut to
/// `idle_cap` seconds (`None`: no cap), then divided by `speed` (> 0; 2.0 plays twice as
/// fast). Events that go back in time wait 0. Input, resize and marker events are not
/// output and are skipped.
#[must_use]
pub fn frames(events: &[Event], speed: f64, idle_cap: Option<f64>) -> Vec<Frame<'_>> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let mut last = 0.0_f64;
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Output) {
        let mut gap = (e.time - last).max(0.0);
        if let Some(cap) = idle_cap {
            gap = gap.min(cap.max(0.0));
        }
        last = last.max(e.time);
        let secs = gap / speed;
        out.push(Frame {
            delay: Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO),
            data: &e.data,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(f: &Frame<'_>) -> u128 {
        f.delay.as_millis()
    }

    fn events() -> Vec<Event> {
        vec![
            Event::output(0.5, "a"),
            Event::marker(0.7, "m"),
            Event::output(1.5, "b"),
            Event::resize(2.0, 100, 30),
            Event::output(11.5, "c"),
        ]
    }

    #[test]
    fn frames_wait_as_the_recording_did_between_outputs() {
        let ev = events();
        let f = frames(&ev, 1.0, None);
        assert_eq!(f.iter().map(|f| f.data).collect::<String>(), "abc");
        assert_eq!(f.iter().map(ms).collect::<Vec<_>>(), [500, 1000, 10_000]);
    }

    #[test]
    fn speed_divides_every_wait() {
        let ev = events();
        let f = frames(&ev, 4.0, None);
        assert_eq!(f.iter().map(ms).collect::<Vec<_>>(), [125, 250, 2500]);
    }

    #[test]
    fn idle_cap_cuts_long_gaps_before_the_speed_applies() {
        let ev = events();
        let f = frames(&ev, 2.0, Some(2.0));
        assert_eq!(f.iter().map(ms).collect::<Vec<_>>(), [250, 500, 1000]);
    }

    #[test]
    fn an_event_back_in_time_waits_nothing_and_a_bad_speed_means_one() {
        let ev = vec![Event::output(2.0, "a"), Event::output(1.0, "b")];
        let f = frames(&ev, 0.0, None);
        assert_eq!(f.iter().map(ms).collect::<Vec<_>>(), [2000, 0]);
    }
}
