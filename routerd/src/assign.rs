//! Who runs what: routerd's assignment of catalog services to workers. Pure logic, and a
//! function of what the registry holds and nothing else (no clock, no randomness, no memory
//! of earlier answers), so that routerd replicas that see the same workers assign the same
//! way without talking to each other.
//!
//! The rules, in order:
//! 1. A service runs only on a worker that offers it, is of its tier, and has its needs (RAM,
//!    GPU memory, disk) left after the worker's other assignments.
//! 2. Kept: a worker that reports a service starting, running or run by its operator keeps
//!    it, up to the service's replica target (and what it takes counts against the worker). The worker's report is what every replica sees
//!    alike, so keeping it is what stops a joining worker from moving a healthy assignment.
//!    Beyond the target (while replicas disagreed, a worker runs the union of what each
//!    assigned), the holders with the highest rendezvous score keep it.
//! 3. Gaps first: the rest is filled a replica at a time, every service's first replica
//!    before any service's second, the services with the fewest eligible workers first (so
//!    that CPU services do not take the GPU workers a GPU service needs).
//! 4. Each replica goes to the eligible worker with the fewest assignments so far (spreading
//!    load), a worker whose service has failed there last, and then to the highest rendezvous
//!    score: a hash of the service and the worker's name, the same on every replica.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rma_proto::load::{ServiceState, parse_size};
use rma_proto::registration::Capabilities;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Needs, ServiceSpec};

/// One worker as assignment sees it.
#[derive(Clone, Copy)]
pub struct WorkerView<'a> {
    pub name: &'a str,
    pub capabilities: &'a Capabilities,
    /// The catalog services it offers and registration accepted.
    pub offers: &'a [String],
    /// What it reports about `service`.
    pub state: &'a dyn Fn(&str) -> ServiceState,
}

impl std::fmt::Debug for WorkerView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerView")
            .field("name", &self.name)
            .field("offers", &self.offers)
            .finish_non_exhaustive()
    }
}

/// The rendezvous score of `worker` for `service`: the same on every replica and build.
pub fn score(service: &str, worker: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(service.as_bytes())
        .chain_update([0])
        .chain_update(worker.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What a worker has left for further assignments. An unknown size admits no service that
/// needs some of it.
#[derive(Debug, Clone, Copy)]
struct Left {
    ram: Option<u64>,
    gpu_memory: Option<u64>,
    disk: Option<u64>,
}

impl Left {
    fn of(capabilities: &Capabilities) -> Self {
        Self {
            ram: parse_size(&capabilities.ram),
            gpu_memory: capabilities.gpu_memory.as_deref().and_then(parse_size),
            disk: parse_size(&capabilities.free_disk),
        }
    }

    fn fits(&self, needs: &Needs) -> bool {
        let fits = |left: Option<u64>, need: Option<u64>| {
            need.is_none_or(|need| left.is_some_and(|left| left >= need))
        };
        fits(self.ram, needs.ram)
            && fits(self.gpu_memory, needs.gpu_memory)
            && fits(self.disk, needs.disk)
    }

    fn take(&mut self, needs: &Needs) {
        let take = |left: &mut Option<u64>, need: Option<u64>| {
            if let (Some(l), Some(n)) = (left.as_mut(), need) {
                *l = l.saturating_sub(n);
            }
        };
        take(&mut self.ram, needs.ram);
        take(&mut self.gpu_memory, needs.gpu_memory);
        take(&mut self.disk, needs.disk);
    }
}

/// Why a worker cannot run `service` at all, whatever else it runs; `None` if it can.
pub fn unfit(spec: &ServiceSpec, capabilities: &Capabilities) -> Option<String> {
    if !spec.tier.admits(capabilities) {
        let tier = match spec.tier {
            crate::catalog::Tier::Gpu => "a GPU, and this worker reports none",
            crate::catalog::Tier::Storage => "a storage worker, and this worker is not one",
            crate::catalog::Tier::Cpu => "any worker",
        };
        return Some(format!("it needs {tier}"));
    }
    if !Left::of(capabilities).fits(&spec.needs) {
        let needs = &spec.needs;
        let mut wanted = Vec::new();
        for (what, need, have) in [
            ("RAM", needs.ram, capabilities.ram.as_str()),
            (
                "GPU memory",
                needs.gpu_memory,
                capabilities.gpu_memory.as_deref().unwrap_or("unknown"),
            ),
            ("free disk", needs.disk, capabilities.free_disk.as_str()),
        ] {
            if let Some(need) = need {
                wanted.push(format!(
                    "{} {what} (the worker has {have})",
                    rma_proto::load::gib(need)
                ));
            }
        }
        return Some(format!("it needs {}", wanted.join(" and ")));
    }
    None
}

/// The assignment: for each worker (by index in `workers`), the services it should run, in
/// catalog order.
pub fn assign(catalog: &Catalog, workers: &[WorkerView<'_>]) -> Vec<Vec<String>> {
    let services: Vec<(&str, &ServiceSpec)> = catalog
        .iter()
        .filter(|(_, spec)| spec.replicas > 0)
        .collect();
    let mut left: Vec<Left> = workers.iter().map(|w| Left::of(w.capabilities)).collect();
    let mut count = vec![0u32; workers.len()];
    let mut chosen: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    // Each (service, worker) score once: a hash each, not one per comparison.
    let scores: BTreeMap<&str, Vec<u64>> = services
        .iter()
        .map(|&(service, _)| {
            (
                service,
                workers.iter().map(|w| score(service, w.name)).collect(),
            )
        })
        .collect();
    let eligible = |i: usize, service: &str, spec: &ServiceSpec| {
        let w = &workers[i];
        w.offers.iter().any(|o| o == service) && spec.tier.admits(w.capabilities)
    };

    // Kept: what runs stays where it runs, up to the target.
    for &(service, spec) in &services {
        let mut holders: Vec<usize> = (0..workers.len())
            .filter(|&i| eligible(i, service, spec) && (workers[i].state)(service).holds())
            .collect();
        let score = &scores[service];
        holders.sort_by_key(|&i| (Reverse(score[i]), workers[i].name));
        let taken = chosen.entry(service).or_default();
        for i in holders {
            if taken.len() >= spec.replicas as usize {
                break;
            }
            // A service that runs has what it needs: its own use of the disk, say, does not
            // count against it.
            left[i].take(&spec.needs);
            taken.push(i);
            count[i] += 1;
        }
    }

    // Gaps first, the scarcest services first.
    let mut order: Vec<(usize, &str, &ServiceSpec)> = services
        .iter()
        .map(|&(service, spec)| {
            let can = (0..workers.len())
                .filter(|&i| {
                    eligible(i, service, spec)
                        && Left::of(workers[i].capabilities).fits(&spec.needs)
                })
                .count();
            (can, service, spec)
        })
        .collect();
    order.sort_by_key(|&(can, service, _)| (can, service));
    let rounds = services.iter().map(|(_, s)| s.replicas).max().unwrap_or(0);
    for round in 1..=rounds as usize {
        for &(_, service, spec) in &order {
            let taken = chosen.entry(service).or_default();
            if (spec.replicas as usize) < round || taken.len() >= round {
                continue;
            }
            let score = &scores[service];
            let best = (0..workers.len())
                .filter(|&i| {
                    eligible(i, service, spec) && !taken.contains(&i) && left[i].fits(&spec.needs)
                })
                .min_by_key(|&i| {
                    let failed = (workers[i].state)(service) == ServiceState::Failed;
                    (failed, count[i], Reverse(score[i]), workers[i].name)
                });
            if let Some(i) = best {
                left[i].take(&spec.needs);
                taken.push(i);
                count[i] += 1;
            }
        }
    }

    let mut assigned = vec![Vec::new(); workers.len()];
    for &(service, _) in &services {
        for &i in chosen.get(service).into_iter().flatten() {
            assigned[i].push(service.to_owned());
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Tier;

    struct W {
        name: String,
        caps: Capabilities,
        offers: Vec<String>,
        states: BTreeMap<String, ServiceState>,
    }

    fn worker(name: &str, gpu: Option<&str>, ram: &str, offers: &[&str]) -> W {
        W {
            name: name.into(),
            caps: Capabilities {
                cpu_cores: 4,
                ram: ram.into(),
                has_gpu: gpu.is_some(),
                gpu_memory: gpu.map(str::to_owned),
                free_disk: "100 GiB".into(),
                worker_type: if gpu.is_some() { "gpu" } else { "cpu" }.into(),
            },
            offers: offers.iter().map(|s| (*s).to_owned()).collect(),
            states: BTreeMap::new(),
        }
    }

    fn spec(tier: Tier, replicas: u32, ram: Option<u64>, gpu: Option<u64>) -> ServiceSpec {
        let mut spec = ServiceSpec::new(tier);
        spec.replicas = replicas;
        spec.needs = Needs {
            ram,
            gpu_memory: gpu,
            disk: None,
        };
        spec
    }

    type StateOf<'a> = Box<dyn Fn(&str) -> ServiceState + 'a>;

    /// The assignment, by worker name.
    fn run(catalog: &Catalog, workers: &[W]) -> BTreeMap<String, Vec<String>> {
        let states: Vec<StateOf<'_>> = workers
            .iter()
            .map(|w| {
                Box::new(move |s: &str| w.states.get(s).copied().unwrap_or(ServiceState::Stopped))
                    as StateOf<'_>
            })
            .collect();
        let views: Vec<WorkerView<'_>> = workers
            .iter()
            .zip(&states)
            .map(|(w, state)| WorkerView {
                name: &w.name,
                capabilities: &w.caps,
                offers: &w.offers,
                state: state.as_ref(),
            })
            .collect();
        let assigned = assign(catalog, &views);
        workers
            .iter()
            .map(|w| w.name.clone())
            .zip(assigned)
            .collect()
    }

    fn catalog(services: &[(&str, ServiceSpec)]) -> Catalog {
        Catalog::new(services.iter().map(|(n, s)| ((*n).to_owned(), s.clone())))
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_scarce_service_gets_its_first_replica_before_another_gets_a_second() {
        // w1 has room for one service and offers both; w2 offers only `a`. Taken in name
        // order, `a` would fill both workers and `b` would get none.
        let catalog = catalog(&[
            ("a", spec(Tier::Cpu, 2, Some(6 * GIB), None)),
            ("b", spec(Tier::Cpu, 1, Some(6 * GIB), None)),
        ]);
        let workers = [
            worker("w1", None, "8 GiB", &["a", "b"]),
            worker("w2", None, "8 GiB", &["a"]),
        ];
        let got = run(&catalog, &workers);
        assert_eq!(got["w1"], ["b"]);
        assert_eq!(got["w2"], ["a"]);
    }

    #[test]
    fn gpu_services_go_where_the_gpu_and_its_memory_are() {
        let catalog = catalog(&[
            ("llm", spec(Tier::Gpu, 1, None, Some(16 * GIB))),
            ("ocr", spec(Tier::Gpu, 1, None, Some(6 * GIB))),
            ("rag", spec(Tier::Cpu, 1, None, None)),
        ]);
        let workers = [
            worker("small-gpu", Some("8 GiB"), "16 GiB", &["llm", "ocr", "rag"]),
            worker("big-gpu", Some("24 GiB"), "16 GiB", &["llm", "ocr", "rag"]),
            worker("cpu", None, "16 GiB", &["llm", "rag"]),
        ];
        let got = run(&catalog, &workers);
        assert_eq!(got["big-gpu"], ["llm"]);
        assert_eq!(got["small-gpu"], ["ocr"]);
        assert_eq!(
            got["cpu"],
            ["rag"],
            "load spreads: the CPU service goes to the idle worker"
        );
        assert_eq!(
            unfit(&spec(Tier::Gpu, 1, None, Some(16 * GIB)), &workers[0].caps).unwrap(),
            "it needs 16.0 GiB GPU memory (the worker has 8 GiB)"
        );
        assert!(unfit(&spec(Tier::Gpu, 1, None, None), &workers[2].caps).is_some());
        assert!(unfit(&spec(Tier::Storage, 1, None, None), &workers[2].caps).is_some());
    }

    #[test]
    fn a_joining_worker_never_moves_a_running_assignment() {
        let catalog = catalog(&[("a", spec(Tier::Cpu, 1, None, None))]);
        // Find a name that outscores w1 for `a`: from scratch it would win.
        let rival = (0..)
            .map(|i| format!("w{i}"))
            .find(|n| score("a", n) > score("a", "w1"))
            .unwrap();
        let mut w1 = worker("w1", None, "8 GiB", &["a"]);
        let fresh = run(
            &catalog,
            &[
                worker("w1", None, "8 GiB", &["a"]),
                worker(&rival, None, "8 GiB", &["a"]),
            ],
        );
        assert_eq!(fresh[&rival], ["a"], "from scratch the higher score wins");
        for state in [
            ServiceState::Starting,
            ServiceState::Running,
            ServiceState::External,
        ] {
            w1.states.insert("a".into(), state);
            let got = run(
                &catalog,
                &[w1_clone(&w1), worker(&rival, None, "8 GiB", &["a"])],
            );
            assert_eq!(got["w1"], ["a"], "{state:?}");
            assert!(got[&rival].is_empty());
        }
    }

    fn w1_clone(w: &W) -> W {
        W {
            name: w.name.clone(),
            caps: w.caps.clone(),
            offers: w.offers.clone(),
            states: w.states.clone(),
        }
    }

    #[test]
    fn a_failed_service_moves_to_another_worker_or_stays_if_there_is_none() {
        let catalog = catalog(&[("a", spec(Tier::Cpu, 1, None, None))]);
        let mut w1 = worker("w1", None, "8 GiB", &["a"]);
        w1.states.insert("a".into(), ServiceState::Failed);
        let got = run(
            &catalog,
            &[w1_clone(&w1), worker("w2", None, "8 GiB", &["a"])],
        );
        assert_eq!(
            (got["w1"].len(), got["w2"].as_slice()),
            (0, ["a".to_owned()].as_slice())
        );
        let alone = run(&catalog, &[w1]);
        assert_eq!(
            alone["w1"],
            ["a"],
            "a failed worker is better than none: meshd restarts it"
        );
    }

    #[test]
    fn more_holders_than_the_target_keep_the_highest_scores_whatever_the_order() {
        let catalog = catalog(&[("a", spec(Tier::Cpu, 2, None, None))]);
        let mut workers: Vec<W> = (0..5)
            .map(|i| {
                let mut w = worker(&format!("w{i}"), None, "8 GiB", &["a"]);
                w.states.insert("a".into(), ServiceState::Running);
                w
            })
            .collect();
        let mut best: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
        best.sort_by_key(|n| Reverse(score("a", n)));
        let first = run(&catalog, &workers);
        workers.reverse();
        assert_eq!(
            run(&catalog, &workers),
            first,
            "the order of the registry does not matter"
        );
        let kept: Vec<&String> = first
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, _)| n)
            .collect();
        let mut expect: Vec<&String> = best.iter().take(2).collect();
        expect.sort();
        assert_eq!(kept, expect);
    }

    #[test]
    fn services_spread_one_to_a_worker_when_they_can() {
        let names = ["a", "b", "c"];
        let catalog = catalog(&names.map(|n| (n, spec(Tier::Cpu, 1, None, None))));
        let workers: Vec<W> = (1..=3)
            .map(|i| worker(&format!("w{i}"), None, "8 GiB", &names))
            .collect();
        let got = run(&catalog, &workers);
        assert!(got.values().all(|s| s.len() == 1), "{got:?}");
        // A fourth service doubles up, and a worker with nothing offered gets nothing.
        let four = catalog_with(&["a", "b", "c", "d"]);
        let mut workers = workers;
        workers.iter_mut().for_each(|w| w.offers.push("d".into()));
        workers.push(worker("idle", None, "8 GiB", &[]));
        let got = run(&four, &workers);
        assert_eq!(got.values().map(Vec::len).sum::<usize>(), 4);
        assert!(got["idle"].is_empty());
    }

    fn catalog_with(names: &[&str]) -> Catalog {
        Catalog::new(
            names
                .iter()
                .map(|n| ((*n).to_owned(), spec(Tier::Cpu, 1, None, None))),
        )
    }

    #[test]
    fn replicas_that_see_the_same_registry_in_any_order_agree() {
        let names = ["a", "b", "c", "d", "e"];
        let catalog = Catalog::new(names.iter().enumerate().map(|(i, n)| {
            (
                (*n).to_owned(),
                spec(Tier::Cpu, 1 + (i as u32 % 3), Some(2 * GIB), None),
            )
        }));
        let mut rng = fastrand::Rng::with_seed(7);
        let mut next = move |n: u64| rng.u64(..n);
        for _ in 0..50 {
            let mut workers: Vec<W> = (0..1 + next(8))
                .map(|i| {
                    let offers: Vec<&str> =
                        names.iter().copied().filter(|_| next(2) == 0).collect();
                    let mut w = worker(
                        &format!("w{i}"),
                        None,
                        &format!("{} GiB", 2 + 2 * next(4)),
                        &offers,
                    );
                    for s in &offers {
                        let state = [
                            ServiceState::Stopped,
                            ServiceState::Running,
                            ServiceState::Failed,
                        ][next(3) as usize];
                        w.states.insert((*s).to_owned(), state);
                    }
                    w
                })
                .collect();
            let first = run(&catalog, &workers);
            workers.reverse();
            let k = next(workers.len() as u64) as usize;
            workers.rotate_left(k);
            assert_eq!(run(&catalog, &workers), first);
            // Nobody runs what it did not offer, and no service beyond its target.
            for w in &workers {
                assert!(first[&w.name].iter().all(|s| w.offers.contains(s)));
            }
            for (i, n) in names.iter().enumerate() {
                let have = first.values().filter(|s| s.iter().any(|x| x == n)).count();
                assert!(have <= 1 + i % 3);
            }
        }
    }
}
