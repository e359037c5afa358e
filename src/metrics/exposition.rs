//! The `/metrics` page: the sum of every shard's [`ShardSnapshot`], encoded in the Prometheus
//! text format (version 0.0.4) by `prometheus-client`.
//!
//! Shards keep plain counters of their own (no atomics on the request path) and send copies on
//! scrape, so there are no live `prometheus-client` metrics to register: the merged snapshot is
//! one [`Collector`] that hands constant values to the crate's encoder, which writes the
//! `# HELP`/`# TYPE` lines, the `_total` suffix of counters, the histogram's cumulative buckets
//! and the escaping of label values. Names and labels are those DESIGN.md lists.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{
    CallOutcome, DURATION_BUCKETS, FreeList, Histogram, PoolGauges, ShardSnapshot, UpstreamOutcome,
};

/// Every shard's counters summed, and the per-shard series, as of one scrape.
#[derive(Debug, Default)]
struct Scrape {
    requests: BTreeMap<(String, u16), u64>,
    duration: Histogram,
    upstream: BTreeMap<String, [u64; 5]>,
    fanout: BTreeMap<(String, String), [u64; 4]>,
    pools: BTreeMap<String, PoolGauges>,
    conns_open: u64,
    /// (shard, accepts, open connections, buffer-ring exhaustions) per shard.
    shards: Vec<(usize, u64, u64, u64)>,
    /// (shard, uring driver counters) per shard.
    drivers: Vec<(usize, crate::io::DriverCounters)>,
    /// (shard, list) and its spare count and misses.
    free_lists: Vec<(usize, FreeList)>,
    draining: bool,
}

impl Scrape {
    fn of(shards: &[ShardSnapshot], draining: bool) -> Scrape {
        let mut m = Scrape {
            draining,
            ..Scrape::default()
        };
        for s in shards {
            for (k, v) in &s.requests {
                *m.requests.entry(k.clone()).or_insert(0) += v;
            }
            m.duration.merge(&s.duration);
            for (k, v) in &s.upstream {
                let e = m.upstream.entry(k.clone()).or_insert([0; 5]);
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b;
                }
            }
            for (k, v) in &s.fanout {
                let e = m.fanout.entry(k.clone()).or_insert([0; 4]);
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b;
                }
            }
            for (k, v) in &s.pools {
                let e = m.pools.entry(k.clone()).or_default();
                e.idle += v.idle;
                e.open += v.open;
                e.opened_total += v.opened_total;
                e.ejected += v.ejected;
            }
            m.conns_open += s.conns_open;
            m.shards
                .push((s.shard, s.accepts, s.conns_open, s.buffer_ring_exhausted));
            m.drivers.push((s.shard, s.driver));
            m.free_lists
                .extend(s.free_lists.iter().map(|f| (s.shard, f.clone())));
        }
        m
    }
}

/// A gauge value as the encoder takes it.
fn gauge(v: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Writes one metric family: its descriptor (`name` without the `ringway_` prefix, and without
/// `_total` for a counter, which the encoder adds), then one series per `(labels, value)`.
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One unlabelled gauge.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    gauge(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = MetricType::Counter;
        let gauge_type = MetricType::Gauge;
        family(
            &mut e,
            "requests",
            "Responses sent, by route and status.",
            counter,
            self.requests.iter().map(|((route, status), n)| {
                (
                    [("route", route.clone()), ("status", status.to_string())],
                    ConstCounter::new(*n),
                )
            }),
        )?;
        let d = &self.duration;
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .zip(d.buckets.iter().copied())
            .collect();
        e.encode_descriptor(
            "request_duration_seconds",
            "Time from request head to response end.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(d.sum, d.count, &buckets, None)?;
        family(
            &mut e,
            "upstream_requests",
            "Upstream exchanges, by upstream and outcome.",
            counter,
            self.upstream.iter().flat_map(|(name, counts)| {
                UpstreamOutcome::ALL.into_iter().map(move |o| {
                    (
                        [("upstream", name.clone()), ("outcome", o.as_str().into())],
                        ConstCounter::new(counts[o as usize]),
                    )
                })
            }),
        )?;
        let pools = |f: fn(&PoolGauges) -> u64| {
            self.pools
                .iter()
                .map(move |(name, p)| ([("upstream", name.clone())], f(p)))
        };
        family(
            &mut e,
            "upstream_connections_opened",
            "Backend connections opened.",
            counter,
            pools(|p| p.opened_total).map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        for (name, help, value) in [
            (
                "upstream_pool_idle",
                "Idle pooled backend connections.",
                (|p: &PoolGauges| p.idle) as fn(&PoolGauges) -> u64,
            ),
            ("upstream_pool_active", "Backend connections in use.", |p| {
                p.open.saturating_sub(p.idle)
            }),
            (
                "upstream_endpoints_ejected",
                "Endpoints ejected by passive health (summed over shards).",
                |p| p.ejected,
            ),
        ] {
            let series = pools(value).map(|(l, v)| (l, gauge(v)));
            family(&mut e, name, help, gauge_type, series)?;
        }
        family(
            &mut e,
            "fanout_calls",
            "Fan-out calls, by route, call and outcome.",
            counter,
            self.fanout.iter().flat_map(|((route, call), counts)| {
                CallOutcome::ALL.into_iter().map(move |o| {
                    let labels = [
                        ("route", route.clone()),
                        ("call", call.clone()),
                        ("outcome", o.as_str().into()),
                    ];
                    (labels, ConstCounter::new(counts[o as usize]))
                })
            }),
        )?;
        single(
            &mut e,
            "client_connections_open",
            "Open client connections.",
            self.conns_open,
        )?;
        let per_shard = |f: fn(&(usize, u64, u64, u64)) -> u64| {
            self.shards
                .iter()
                .map(move |s| ([("shard", s.0.to_string())], f(s)))
        };
        family(
            &mut e,
            "shard_accepts",
            "Client connections accepted, per shard.",
            counter,
            per_shard(|s| s.1).map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        family(
            &mut e,
            "shard_connections_open",
            "Open client connections, per shard.",
            gauge_type,
            per_shard(|s| s.2).map(|(l, v)| (l, gauge(v))),
        )?;
        family(
            &mut e,
            "shard_buffer_ring_exhausted",
            "Idle client reads that found the io_uring buffer ring empty and used an ordinary \
             buffer (raise io_uring.buffer_ring_entries if this grows fast).",
            counter,
            per_shard(|s| s.3).map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        let per_driver = |f: fn(&crate::io::DriverCounters) -> u64| {
            self.drivers
                .iter()
                .map(move |(shard, d)| ([("shard", shard.to_string())], ConstCounter::new(f(d))))
        };
        family(
            &mut e,
            "shard_task_polls",
            "Task polls by the uring driver's executor (one per wake-up, plus a task's first; 0 \
             on epoll): divided by requests, the wake-ups a request costs.",
            counter,
            per_driver(|d| d.task_polls),
        )?;
        family(
            &mut e,
            "shard_uring_sqes",
            "io_uring submission queue entries queued (0 on epoll).",
            counter,
            per_driver(|d| d.sqes),
        )?;
        family(
            &mut e,
            "shard_uring_cqes",
            "io_uring completions reaped (0 on epoll).",
            counter,
            per_driver(|d| d.cqes),
        )?;
        let per_driver_gauge = |f: fn(&crate::io::DriverCounters) -> u64| {
            self.drivers
                .iter()
                .map(move |(shard, d)| ([("shard", shard.to_string())], gauge(f(d))))
        };
        family(
            &mut e,
            "shard_uring_registered_files",
            "Sockets in the shard's io_uring file table, named by slot (0 on epoll; beyond the \
             table, sockets use plain fds).",
            gauge_type,
            per_driver_gauge(|d| d.files_in_use),
        )?;
        family(
            &mut e,
            "shard_uring_file_slots",
            "Slots in the shard's io_uring file table (0 on epoll or with \
             io_uring.registered_files off).",
            gauge_type,
            per_driver_gauge(|d| d.file_slots),
        )?;
        let lists = |f: fn(&FreeList) -> u64| {
            self.free_lists.iter().map(move |(shard, l)| {
                (
                    [("shard", shard.to_string()), ("list", l.name.to_string())],
                    f(l),
                )
            })
        };
        family(
            &mut e,
            "free_list_spare",
            "Spare items on a shard's free list (buffers, request-state slots), per shard and list.",
            gauge_type,
            lists(|l| l.spare).map(|(l, v)| (l, gauge(v))),
        )?;
        family(
            &mut e,
            "free_list_misses",
            "Takes that found a shard's free list empty and allocated (raise server.free_list_max \
             if this grows under steady load).",
            counter,
            lists(|l| l.misses).map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        single(
            &mut e,
            "shards_reporting",
            "Shards that answered this scrape.",
            self.shards.len() as u64,
        )?;
        single(
            &mut e,
            "draining",
            "1 while the gateway drains.",
            u64::from(self.draining),
        )
    }
}

/// Renders the sum of `shards` in the Prometheus text exposition format (version 0.0.4).
pub fn render(shards: &[ShardSnapshot], draining: bool) -> String {
    let mut registry = Registry::with_prefix("ringway");
    registry.register_collector(Box::new(Scrape::of(shards, draining)));
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail, and every value above is encodable.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(shard: usize) -> ShardSnapshot {
        let mut s = ShardSnapshot {
            shard,
            accepts: 3,
            conns_open: 2,
            buffer_ring_exhausted: 1,
            driver: crate::io::DriverCounters {
                task_polls: 7,
                sqes: 9,
                cqes: 8,
                files_in_use: 5,
                file_slots: 64,
            },
            ..ShardSnapshot::default()
        };
        s.requests.insert(("/a\"b".into(), 200), 5);
        s.requests.insert(("".into(), 404), 1);
        s.duration.buckets[0] = 2;
        s.duration.buckets[DURATION_BUCKETS.len()] = 1;
        s.duration.count = 3;
        s.duration.sum = 11.5;
        s.upstream.insert("ads".into(), [4, 1, 0, 0, 0]);
        s.fanout
            .insert(("/page".into(), "ads".into()), [1, 0, 2, 0]);
        s.pools.insert(
            "ads".into(),
            PoolGauges {
                idle: 1,
                open: 3,
                opened_total: 7,
                ejected: 0,
            },
        );
        s
    }

    #[test]
    fn names_labels_and_sums_are_the_documented_ones() {
        let text = render(&[snapshot(0), snapshot(1)], true);
        for line in [
            "# HELP ringway_requests_total Responses sent, by route and status.",
            "# TYPE ringway_requests_total counter",
            "ringway_requests_total{route=\"\",status=\"404\"} 2",
            "ringway_requests_total{route=\"/a\\\"b\",status=\"200\"} 10",
            "# TYPE ringway_request_duration_seconds histogram",
            "ringway_request_duration_seconds_bucket{le=\"0.0005\"} 4",
            "ringway_request_duration_seconds_bucket{le=\"10\"} 4",
            "ringway_request_duration_seconds_bucket{le=\"+Inf\"} 6",
            "ringway_request_duration_seconds_count 6",
            "ringway_upstream_requests_total{upstream=\"ads\",outcome=\"ok\"} 8",
            "ringway_upstream_requests_total{upstream=\"ads\",outcome=\"unavailable\"} 0",
            "ringway_upstream_connections_opened_total{upstream=\"ads\"} 14",
            "# TYPE ringway_upstream_pool_idle gauge",
            "ringway_upstream_pool_idle{upstream=\"ads\"} 2",
            "ringway_upstream_pool_active{upstream=\"ads\"} 4",
            "ringway_upstream_endpoints_ejected{upstream=\"ads\"} 0",
            "ringway_fanout_calls_total{route=\"/page\",call=\"ads\",outcome=\"timeout\"} 4",
            "ringway_client_connections_open 4",
            "ringway_shard_accepts_total{shard=\"1\"} 3",
            "ringway_shard_connections_open{shard=\"0\"} 2",
            "ringway_shard_buffer_ring_exhausted_total{shard=\"0\"} 1",
            "ringway_shard_task_polls_total{shard=\"0\"} 7",
            "ringway_shard_uring_sqes_total{shard=\"1\"} 9",
            "ringway_shard_uring_cqes_total{shard=\"0\"} 8",
            "ringway_shard_uring_registered_files{shard=\"0\"} 5",
            "ringway_shard_uring_file_slots{shard=\"1\"} 64",
            "ringway_shards_reporting 2",
            "# HELP ringway_draining 1 while the gateway drains.",
            "ringway_draining 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "expected the line {line:?} in:\n{text}"
            );
        }
    }
}
