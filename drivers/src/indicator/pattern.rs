//! What each [`Signal`] looks and sounds like. Pure data, so patterns can be tested for being
//! distinguishable without hardware.
//!
//! | signal        | GPIO LEDs and buzzer                                   | R503 Aura LED              |
//! |---------------|--------------------------------------------------------|----------------------------|
//! | Accepted      | green 1 s, one short beep                               | green on 1 s               |
//! | Duplicate     | green blinks twice, two short beeps                     | blue flashes twice         |
//! | Unknown       | red 1 s, one long low beep                              | red flashes 3 times        |
//! | StorageFull   | red and buzzer alternate fast for 3 s (an alarm: staff) | purple flashes 10 times    |
//! | Offline       | red blinks once, silent                                 | yellow breathes once       |
//! | Online        | green blinks once, silent                               | cyan breathes once         |
//! | Refused       | red with three long beeps (the centre refused punches)  | red breathes 3 times       |

use std::time::Duration;

use crate::Signal;

/// Lamp and buzzer states for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lights {
    /// Green LED on.
    pub green: bool,
    /// Red LED on.
    pub red: bool,
    /// Buzzer sounding.
    pub buzzer: bool,
}

/// Hold `lights` for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    /// Outputs during the step.
    pub lights: Lights,
    /// How long.
    pub duration: Duration,
}

const fn step(green: bool, red: bool, buzzer: bool, ms: u64) -> Step {
    Step {
        lights: Lights { green, red, buzzer },
        duration: Duration::from_millis(ms),
    }
}

/// The GPIO pattern for a signal. Every pattern ends with everything off.
pub fn gpio_pattern(signal: Signal) -> Vec<Step> {
    let off = |ms| step(false, false, false, ms);
    let mut steps = match signal {
        Signal::Accepted => vec![step(true, false, true, 100), step(true, false, false, 900)],
        Signal::Duplicate => vec![
            step(true, false, true, 100),
            off(150),
            step(true, false, true, 100),
            off(150),
        ],
        Signal::Unknown => vec![step(false, true, true, 600), step(false, true, false, 400)],
        Signal::StorageFull => (0..15)
            .flat_map(|_| [step(false, true, false, 100), step(false, false, true, 100)])
            .collect(),
        Signal::Offline => vec![step(false, true, false, 150)],
        Signal::Online => vec![step(true, false, false, 150)],
        Signal::Refused => (0..3)
            .flat_map(|_| [step(false, true, true, 300), step(false, false, false, 200)])
            .collect(),
    };
    steps.push(off(0));
    steps
}

/// One Aura LED command: control, speed, colour, count (see [`crate::ef01::Ef01::aura`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuraStep {
    /// 1 breathe, 2 flash, 3 on, 4 off, 5 fade on, 6 fade off.
    pub control: u8,
    /// Speed (lower is faster).
    pub speed: u8,
    /// 1 red, 2 blue, 3 purple, 4 green, 5 yellow, 6 cyan, 7 white.
    pub colour: u8,
    /// Repetitions, 0 = forever.
    pub count: u8,
    /// Time to leave it before the next step.
    pub hold: Duration,
}

const fn aura(control: u8, speed: u8, colour: u8, count: u8, ms: u64) -> AuraStep {
    AuraStep {
        control,
        speed,
        colour,
        count,
        hold: Duration::from_millis(ms),
    }
}

/// The Aura pattern for a signal; ends with the LED off.
pub fn aura_pattern(signal: Signal) -> Vec<AuraStep> {
    let first = match signal {
        Signal::Accepted => aura(3, 0, 4, 0, 1000),
        Signal::Duplicate => aura(2, 0x20, 2, 2, 800),
        Signal::Unknown => aura(2, 0x20, 1, 3, 1200),
        Signal::StorageFull => aura(2, 0x10, 3, 10, 3000),
        Signal::Offline => aura(1, 0x80, 5, 1, 1500),
        Signal::Online => aura(1, 0x80, 6, 1, 1500),
        Signal::Refused => aura(1, 0x40, 1, 3, 2400),
    };
    vec![first, aura(4, 0, first.colour, 0, 0)]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const ALL: [Signal; 7] = [
        Signal::Accepted,
        Signal::Duplicate,
        Signal::Unknown,
        Signal::StorageFull,
        Signal::Offline,
        Signal::Online,
        Signal::Refused,
    ];

    #[test]
    fn every_signal_has_its_own_gpio_pattern_ending_dark() {
        let patterns: HashSet<Vec<Step>> = ALL.iter().map(|s| gpio_pattern(*s)).collect();
        assert_eq!(patterns.len(), ALL.len());
        for s in ALL {
            let p = gpio_pattern(s);
            assert_eq!(p.last().unwrap().lights, Lights::default(), "{s:?}");
            let total: Duration = p.iter().map(|s| s.duration).sum();
            assert!(
                total <= Duration::from_secs(3),
                "{s:?} too long for a queue of students"
            );
        }
    }

    #[test]
    fn accepted_and_refused_differ_in_colour_not_just_rhythm() {
        let green = |s| gpio_pattern(s).iter().any(|st| st.lights.green);
        let red = |s| gpio_pattern(s).iter().any(|st| st.lights.red);
        assert!(green(Signal::Accepted) && !red(Signal::Accepted));
        assert!(red(Signal::Unknown) && !green(Signal::Unknown));
        assert!(red(Signal::StorageFull) && !green(Signal::StorageFull));
        assert!(red(Signal::Refused) && !green(Signal::Refused));
    }

    #[test]
    fn every_signal_has_its_own_aura_colour_or_mode() {
        let firsts: HashSet<(u8, u8)> = ALL
            .iter()
            .map(|s| {
                let a = aura_pattern(*s)[0];
                (a.control, a.colour)
            })
            .collect();
        assert_eq!(firsts.len(), ALL.len());
        for s in ALL {
            assert_eq!(aura_pattern(s).last().unwrap().control, 4, "{s:?} ends off");
        }
    }
}
