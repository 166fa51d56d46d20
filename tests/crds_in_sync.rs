//! `crds/` must be exactly what the Rust types generate: users `kubectl apply -f crds/` and the
//! Helm chart ships them, so a stale file is a silent API change.

use faultline::{
    api::all_crds,
    cli::crds::{crd_file_name, render_crd},
};

#[test]
fn checked_in_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected_files = Vec::new();
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        let generated = render_crd(&crd).expect("CRD renders");
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == generated,
            "crds/{name} is out of date with src/api: run `make crds` and commit the result"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds a file no type generates: run `make crds`"
    );
}

#[test]
fn checked_in_reference_matches_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == faultline::reference::markdown(&all_crds()),
        "docs/reference.md is out of date with src/api: run `make crds` and commit the result"
    );
}
