//! What this machine offers a coordinator: CPU cores, memory, GPU presence and memory
//! (`nvidia-smi`, else `/proc/driver/nvidia`; absent when neither is there), free disk and
//! the worker type. The config may declare a GPU or a type that detection cannot see. And
//! what changes, measured for each heartbeat ([`measure`]): load average, memory in use,
//! free disk, GPU utilisation and GPU memory in use.

use std::path::Path;
use std::process::Command;

use crate::config::WorkerSettings;

pub use rma_proto::load::{MachineLoad, gib};
pub use rma_proto::registration::Capabilities;

/// Total memory in bytes from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// GPU memory in bytes from `nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits`
/// (MiB per GPU, one per line): the largest GPU's.
pub fn parse_nvidia_smi(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .max()
        .map(|mib| mib << 20)
}

/// What detection found about GPUs: none, one of unknown memory, or one with memory.
fn detect_gpu() -> (bool, Option<String>) {
    let smi = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output();
    if let Ok(out) = smi
        && out.status.success()
        && let Some(bytes) = parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
    {
        return (true, Some(gib(bytes)));
    }
    let proc_gpus = Path::new("/proc/driver/nvidia/gpus");
    let present = std::fs::read_dir(proc_gpus).is_ok_and(|mut d| d.next().is_some());
    (present, None)
}

/// Utilisation (percent) and memory in use (bytes) of the busiest GPU, from
/// `nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi_usage(text: &str) -> Option<(f64, u64)> {
    text.lines()
        .filter_map(|line| {
            let (util, used) = line.split_once(',')?;
            Some((
                util.trim().parse::<f64>().ok()?,
                used.trim().parse::<u64>().ok()? << 20,
            ))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The one-minute load average from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Memory in use (total less available) from `/proc/meminfo` text.
pub fn parse_memory_used(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?
            .checked_mul(1024)
    };
    Some(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

/// What changes on this machine, measured now. Runs `nvidia-smi` when it is there: call it
/// off the event loop (`spawn_blocking`).
pub fn measure(settings: &WorkerSettings) -> MachineLoad {
    let gpu = Command::new("nvidia-smi")
        .args([
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| parse_nvidia_smi_usage(&String::from_utf8_lossy(&out.stdout)));
    MachineLoad {
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| parse_loadavg(&t))
            .unwrap_or(0.0),
        memory_used_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_memory_used(&t))
            .unwrap_or(0),
        free_disk_bytes: free_disk(&settings.disk_path),
        gpu_utilization: gpu.map(|g| g.0),
        gpu_memory_used_bytes: gpu.map(|g| g.1),
    }
}

fn free_disk(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// Detects this machine's capabilities, then applies the config's declarations.
pub fn detect(settings: &WorkerSettings) -> Capabilities {
    let cpu_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .map_or_else(|| "unknown".to_owned(), gib);
    let (mut has_gpu, mut gpu_memory) = detect_gpu();
    if let Some(declared) = &settings.gpu_memory {
        has_gpu = true;
        gpu_memory = Some(declared.clone());
    }
    let free = free_disk(&settings.disk_path);
    let free_disk = free.map_or_else(|| "unknown".to_owned(), gib);
    let worker_type = settings.worker_type.clone().unwrap_or_else(|| {
        let storage = free.is_some_and(|f| f >= settings.storage_min_free);
        match (has_gpu, storage) {
            (true, _) => "gpu",
            (false, true) => "storage",
            (false, false) => "cpu",
        }
        .to_owned()
    });
    Capabilities {
        cpu_cores,
        ram,
        has_gpu,
        gpu_memory,
        free_disk,
        worker_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_nvidia_smi_output_parse() {
        let meminfo = "MemTotal:       32768000 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(32_768_000 * 1024));
        assert_eq!(gib(32_768_000 * 1024), "31.2 GiB");
        assert_eq!(parse_meminfo("nothing"), None);
        assert_eq!(parse_nvidia_smi("24576\n8192\n"), Some(24576 << 20));
        assert_eq!(gib(24576 << 20), "24.0 GiB");
        assert_eq!(parse_nvidia_smi("No devices were found\n"), None);
        assert_eq!(
            parse_nvidia_smi_usage("12, 2048\n87, 1024\n"),
            Some((87.0, 1024 << 20)),
            "the busiest GPU"
        );
        assert_eq!(parse_nvidia_smi_usage("[N/A], [N/A]\n"), None);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        let meminfo = "MemTotal:       8000 kB\nMemFree:   1000 kB\nMemAvailable:   3000 kB\n";
        assert_eq!(parse_memory_used(meminfo), Some(5000 * 1024));
        assert_eq!(parse_memory_used("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn detection_reports_this_machine_and_honours_declarations() {
        let detected = detect(&WorkerSettings::default());
        assert!(detected.cpu_cores >= 1);
        assert!(detected.ram.ends_with(" GiB"), "{}", detected.ram);
        assert!(
            detected.free_disk.ends_with(" GiB"),
            "{}",
            detected.free_disk
        );
        assert_eq!(
            detected.worker_type,
            if detected.has_gpu { "gpu" } else { "cpu" },
            "this test machine has under 1 TiB free"
        );
        // Free disk over the threshold makes a GPU-less machine a storage worker.
        let storage = detect(&WorkerSettings {
            storage_min_free: 1,
            ..WorkerSettings::default()
        });
        assert_eq!(
            storage.worker_type,
            if storage.has_gpu { "gpu" } else { "storage" }
        );
        let load = measure(&WorkerSettings::default());
        assert!(load.memory_used_bytes > 0 && load.free_disk_bytes.is_some_and(|f| f > 0));
        let declared = detect(&WorkerSettings {
            gpu_memory: Some("24 GiB".into()),
            ..WorkerSettings::default()
        });
        assert!(declared.has_gpu);
        assert_eq!(declared.gpu_memory.as_deref(), Some("24 GiB"));
        assert_eq!(declared.worker_type, "gpu");
        let json = serde_json::to_value(&detected).unwrap();
        assert!(json.get("cpu_cores").is_some() && json.get("has_gpu").is_some());
    }
}
