//! From boots to figures: medians and spreads per point, ratios to plain TCP within a boot, and
//! ratios between two kernels' boots that ran side by side.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Comparison, GuestPoint, GuestResults, KernelBench, LatencyRun, LatencySummary, Ratio, ThroughputRun, ThroughputSummary, BASELINE, PATHS};
use crate::vm::Accel;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[n - 1], n })
    }
}

/// Keyed by (the path's row in PATHS, size): the path, and its point in each boot (by boot index,
/// so that boot i of one path pairs with boot i of another).
type Points<'a, T> = BTreeMap<(usize, usize), (String, Vec<Option<&'a GuestPoint<T>>>)>;

/// Each path's point in each boot, in table order.
fn by_point<'a, T>(boots: &'a [GuestResults], points: impl Fn(&'a GuestResults) -> &'a [GuestPoint<T>]) -> Points<'a, T> {
    let mut map: Points<T> = BTreeMap::new();
    for (i, boot) in boots.iter().enumerate() {
        for point in points(boot) {
            let order = PATHS.iter().position(|p| *p == point.path).unwrap_or(PATHS.len());
            map.entry((order, point.size)).or_insert_with(|| (point.path.clone(), vec![None; boots.len()])).1[i] = Some(point);
        }
    }
    map
}

/// For each boot, the median of `value` over the point's runs in that boot.
fn boot_medians<T>(point: &[Option<&GuestPoint<T>>], value: impl Fn(&T) -> f64) -> Vec<Option<f64>> {
    point.iter().map(|&p| Stats::of(p?.runs.iter().map(&value)).map(|s| s.median)).collect()
}

/// Per-boot ratios `top[i] / bottom[i]`, skipping boots where either side has no figure.
fn paired_ratio(top: &[Option<f64>], bottom: &[Option<f64>]) -> Option<Stats> {
    Stats::of(top.iter().zip(bottom).filter_map(|(t, b)| Some((*t)? / (*b)?)))
}

/// Stats of `value` over every measured run of every boot; a run without the value is left out.
fn over_runs<T>(points: &[Option<&GuestPoint<T>>], value: impl Fn(&T) -> Option<f64>) -> Option<Stats> {
    Stats::of(points.iter().flatten().flat_map(|p| p.runs.iter().filter_map(&value)))
}

fn errors<T>(points: &[Option<&GuestPoint<T>>]) -> Vec<String> {
    points.iter().enumerate().filter_map(|(i, &p)| p?.error.as_ref().map(|e| format!("boot {}: {e}", i + 1))).collect()
}

fn mb_per_s(r: &ThroughputRun) -> f64 {
    r.bytes as f64 / r.seconds / 1e6
}

fn one_way_p50(r: &LatencyRun) -> f64 {
    r.one_way_p50_us
}

/// Why a throughput run's figure cannot be trusted, if it cannot: the receiver's content check did
/// not find every message the sender wrote, or more or fewer bytes than were sent arrived.
fn unsound(run: &ThroughputRun, size: usize) -> Option<String> {
    let sent = run.messages * size as u64;
    (run.verified_messages != run.messages || run.bytes != sent).then(|| {
        format!(
            "{} messages ({sent} bytes) sent, {} bytes received, {} messages verified in order",
            run.messages, run.bytes, run.verified_messages
        )
    })
}

/// Takes the runs whose measurement is wrong out of the figures, into the point's error.
fn drop_unsound(boot: &mut GuestResults) {
    for point in &mut boot.throughput {
        let size = point.size;
        let mut bad = Vec::new();
        let mut index = 0;
        point.runs.retain(|run| {
            index += 1;
            let why = unsound(run, size);
            bad.extend(why.as_ref().map(|why| format!("measured run {index}: {why}")));
            why.is_none()
        });
        if !bad.is_empty() {
            let earlier = point.error.take().into_iter();
            point.error = Some(earlier.chain(bad).collect::<Vec<_>>().join("; "));
        }
    }
}

/// Turn a kernel's boots into its summary.
pub fn summarize(
    kernel: &str,
    release: &str,
    accel: Accel,
    cpus: u32,
    mut boots: Vec<GuestResults>,
    boot_seconds: Vec<f64>,
) -> anyhow::Result<KernelBench> {
    boots.iter_mut().for_each(drop_unsound);
    let settings = boots.first().context("no boots to summarise")?.settings.clone();
    let tput = by_point(&boots, |b| &b.throughput);
    let tcp_tput = |size| tput.iter().find(|((_, s), (path, _))| *s == size && path == BASELINE).map(|(_, point)| point);
    let throughput = tput
        .iter()
        .map(|(&(_, size), (path, points))| {
            let per_message = |n: f64, r: &ThroughputRun| n / r.messages as f64;
            ThroughputSummary {
                path: path.clone(),
                size,
                mb_per_s: over_runs(points, |r| Some(mb_per_s(r))),
                messages_per_s: over_runs(points, |r| Some(r.messages as f64 / r.seconds)),
                switches_per_message: over_runs(points, |r| Some(per_message(r.counters.switches(), r))),
                system_switches_per_message: over_runs(points, |r| Some(per_message(r.counters.system_switches as f64, r))),
                tcp_segments_per_message: over_runs(points, |r| Some(per_message(r.counters.tcp_segments? as f64, r))),
                vs_tcp: tcp_tput(size).and_then(|(_, tcp)| paired_ratio(&boot_medians(points, mb_per_s), &boot_medians(tcp, mb_per_s))),
                errors: errors(points),
            }
        })
        .collect();

    let lat = by_point(&boots, |b| &b.latency);
    let tcp_lat = |size| lat.iter().find(|((_, s), (path, _))| *s == size && path == BASELINE).map(|(_, point)| point);
    let latency = lat
        .iter()
        .map(|(&(_, size), (path, points))| LatencySummary {
            path: path.clone(),
            size,
            one_way_p50_us: over_runs(points, |r| Some(one_way_p50(r))),
            one_way_p99_us: over_runs(points, |r| Some(r.one_way_p99_us)),
            round_trip_p50_us: over_runs(points, |r| Some(r.round_trip_p50_us)),
            round_trip_p99_us: over_runs(points, |r| Some(r.round_trip_p99_us)),
            switches_per_request: over_runs(points, |r| Some(r.counters.switches() / r.samples as f64)),
            system_switches_per_request: over_runs(points, |r| Some(r.counters.system_switches as f64 / r.samples as f64)),
            vs_tcp: tcp_lat(size).and_then(|(_, tcp)| paired_ratio(&boot_medians(points, one_way_p50), &boot_medians(tcp, one_way_p50))),
            errors: errors(points),
        })
        .collect();

    Ok(KernelBench {
        kernel: kernel.to_string(),
        release: release.to_string(),
        accel,
        cpus,
        settings,
        boot_seconds,
        throughput,
        latency,
        boots,
    })
}

/// `other` over `base`, pairing boot i of each (they ran one after the other).
pub fn compare(base: &KernelBench, other: &KernelBench) -> Comparison {
    fn ratios<T>(
        base: &[GuestResults],
        other: &[GuestResults],
        points: fn(&GuestResults) -> &[GuestPoint<T>],
        value: fn(&T) -> f64,
    ) -> Vec<Ratio> {
        let theirs = by_point(other, points);
        by_point(base, points)
            .iter()
            .map(|(key, (path, ours))| Ratio {
                path: path.clone(),
                size: key.1,
                ratio: theirs.get(key).and_then(|(_, theirs)| paired_ratio(&boot_medians(theirs, value), &boot_medians(ours, value))),
            })
            .collect()
    }
    Comparison {
        base: base.kernel.clone(),
        other: other.kernel.clone(),
        throughput: ratios(&base.boots, &other.boots, |b| &b.throughput, mb_per_s),
        latency: ratios(&base.boots, &other.boots, |b| &b.latency, one_way_p50),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_and_the_extremes() {
        let s = Stats::of([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert_eq!(Stats::of([f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_boots_and_skip_missing_ones() {
        let r = paired_ratio(&[Some(2.0), None, Some(3.0)], &[Some(4.0), Some(1.0), Some(3.0)]).unwrap();
        assert_eq!((r.median, r.min, r.max, r.n), (0.75, 0.5, 1.0, 2));
    }
}

