//! What this machine offers a coordinator: CPU cores, memory, GPU presence and memory
//! (`nvidia-smi`, else `/proc/driver/nvidia`; absent when neither is there), free disk and
//! the worker type. The config may declare a GPU or a type that detection cannot see.

use std::path::Path;
use std::process::Command;

use crate::config::WorkerSettings;

pub use rma_proto::registration::Capabilities;

/// `12.3 GiB` for a byte count.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

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
    let free_disk = free_disk(&settings.disk_path).map_or_else(|| "unknown".to_owned(), gib);
    let worker_type = settings
        .worker_type
        .clone()
        .unwrap_or_else(|| if has_gpu { "gpu" } else { "cpu" }.to_owned());
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
            if detected.has_gpu { "gpu" } else { "cpu" }
        );
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
