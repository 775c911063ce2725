//! Writes the CRDs to `deploy/crds/`, one file per CRD (or prints them with `--stdout`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--stdout") {
        print!("{}", tailor_crds::crd::crd_yaml()?);
        return Ok(());
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(tailor_crds::crd::CRD_DIR);
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in tailor_crds::crd::crd_files()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
