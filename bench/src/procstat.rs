//! What a process costs, from `/proc`: CPU time (utime + stime of every thread, in clock ticks,
//! from `/proc/<pid>/stat`) and resident memory (`VmRSS` of `/proc/<pid>/status`).

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// utime + stime in ticks from the text of `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state(3) ppid(4) ... utime is field 14, stime 15 → indexes 11 and 12 here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in kB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time used so far by `pid`, µs.
pub fn cpu_us(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_stat_cpu_ticks(&text)
        .map(|ticks| ticks * (1_000_000 / CLOCK_TICKS_PER_S))
        .ok_or_else(|| format!("{path}: no utime/stime"))
}

/// Resident memory of `pid`, kB.
pub fn rss_kb(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_status_rss_kb(&text).ok_or_else(|| format!("{path}: no VmRSS"))
}

/// The first field of `/proc/loadavg`.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_even_when_the_name_has_spaces_and_parentheses() {
        let stat = "4242 (envoy (w) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
    }

    #[test]
    fn refuses_a_truncated_stat_line() {
        assert_eq!(parse_stat_cpu_ticks("4242 (envoy) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_vmrss_in_kilobytes() {
        let status = "Name:\tenvoy\nVmPeak:\t 999 kB\nVmRSS:\t   71234 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss_kb(status), Some(71234));
        assert_eq!(parse_status_rss_kb("Name: x\n"), None);
    }

    #[test]
    fn measures_this_very_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 0);
        assert!(cpu_us(pid).is_ok());
    }
}
