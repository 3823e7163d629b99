//! CPU time of the bench process, the keyward child and the upstream thread, read from
//! `/proc` (Linux). Two cores are shared by everyone, so a measurement is only meaningful next
//! to who burnt them: a generator near 100 % of a core may be the bottleneck. Elsewhere the
//! readings are absent and the table says so.

use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`), 100 on every Linux ABI in use.
const TICKS_PER_SECOND: f64 = 100.0;

/// Whose CPU time to read.
#[derive(Clone, Default)]
pub struct CpuWatch {
    /// The keyward child process.
    pub keyward_pid: Option<u32>,
    /// The upstream server's thread, inside this process (its time is taken off ours).
    pub upstream_tid: Option<u32>,
}

#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    at: Instant,
    own: Option<u64>,
    keyward: Option<u64>,
    upstream: Option<u64>,
    /// Busy time of the whole machine (every process, every core).
    machine: Option<u64>,
}

impl CpuWatch {
    pub fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            own: ticks("/proc/self/stat"),
            keyward: self
                .keyward_pid
                .and_then(|pid| ticks(&format!("/proc/{pid}/stat"))),
            upstream: self
                .upstream_tid
                .and_then(|tid| ticks(&format!("/proc/self/task/{tid}/stat"))),
            machine: machine_busy_ticks(),
        }
    }
}

impl CpuSnapshot {
    /// Percent of one core used between the two snapshots; `None` without `/proc`.
    pub fn usage(before: CpuSnapshot, after: CpuSnapshot) -> Option<crate::load::CpuUse> {
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let percent = |from: Option<u64>, to: Option<u64>| -> Option<f64> {
            let used = to?.checked_sub(from?)?;
            Some(used as f64 / TICKS_PER_SECOND / seconds * 100.0)
        };
        let own = percent(before.own, after.own)?;
        let upstream = percent(before.upstream, after.upstream);
        let keyward = percent(before.keyward, after.keyward);
        let others = percent(before.machine, after.machine)
            .map(|machine| (machine - own - keyward.unwrap_or(0.0)).max(0.0));
        Some(crate::load::CpuUse {
            generator: (own - upstream.unwrap_or(0.0)).max(0.0),
            keyward,
            upstream,
            others,
        })
    }
}

/// utime + stime of a `/proc/…/stat` file, in ticks.
fn ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    parse_ticks(&stat)
}

fn parse_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. There, index 0 is field 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of all cores from `/proc/stat`: everything but idle and iowait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?)
}

fn parse_machine_busy(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let values: Vec<u64> = fields
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(total - idle)
}

/// This thread's id, from `/proc/thread-self` (Linux).
pub fn current_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_ticks(stat), Some(300));
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let line = "cpu  100 5 50 1000 20 3 2 1 0 0";
        assert_eq!(parse_machine_busy(line), Some(161));
        assert_eq!(parse_machine_busy("cpu0 1 2 3 4 5 6 7 8"), None);
    }
}
