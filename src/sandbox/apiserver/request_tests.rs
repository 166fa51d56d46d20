use super::*;
use axum::http::HeaderValue;

/// What `format_of` makes of an `Accept` header (`Err(code)` for a refusal).
fn format(accept: &str) -> Result<Format, u16> {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::ACCEPT,
        HeaderValue::from_str(accept).unwrap(),
    );
    format_of(&headers).map_err(|e| e.code)
}

const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

#[test]
fn no_accept_header_is_json() {
    assert_eq!(
        format_of(&HeaderMap::new()).map_err(|e| e.code),
        Ok(Format::Json)
    );
    assert_eq!(format(""), Ok(Format::Json));
}

#[test]
fn kube_rs_metadata_requests_get_metadata_forms() {
    // `Api::get_metadata` and `watch_metadata`; `Api::list_metadata`.
    assert_eq!(format(METADATA), Ok(Format::Metadata));
    assert_eq!(format(METADATA_LIST), Ok(Format::MetadataList));
    assert_eq!(
        format("application/yaml;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        Ok(Format::Metadata)
    );
}

#[test]
fn client_go_metadata_client_gets_json_metadata_after_its_protobuf_choice() {
    let accept = format!(
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,\
         {METADATA_LIST},application/json"
    );
    assert_eq!(format(&accept), Ok(Format::MetadataList));
}

#[test]
fn metadata_outside_meta_k8s_io_v1_is_passed_over_as_the_real_server_does() {
    // Alone: nothing left to serve. With a plain fallback: the object itself.
    assert_eq!(
        format("application/json;as=PartialObjectMetadata"),
        Err(406)
    );
    assert_eq!(
        format("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"),
        Err(406)
    );
    assert_eq!(
        format("application/json;as=PartialObjectMetadata,application/json"),
        Ok(Format::Json)
    );
}

#[test]
fn metadata_in_protobuf_alone_is_not_acceptable() {
    assert_eq!(
        format("application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        Err(406)
    );
}

#[test]
fn an_unknown_conversion_serves_the_object_itself() {
    assert_eq!(
        format("application/json;as=Foo;g=meta.k8s.io;v=v1"),
        Ok(Format::Json)
    );
}

#[test]
fn the_first_json_choice_decides_the_form() {
    assert_eq!(
        format(
            "application/json;as=Table;v=v1;g=meta.k8s.io,\
             application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ),
        Ok(Format::Table)
    );
    assert_eq!(
        format("application/json,application/json;as=Table;v=v1;g=meta.k8s.io"),
        Ok(Format::Json)
    );
    assert_eq!(
        format(&format!("application/json,{METADATA}")),
        Ok(Format::Json)
    );
    // A protobuf Table is not served; the JSON Table after it is.
    assert_eq!(
        format(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,\
             application/json;as=Table;v=v1;g=meta.k8s.io"
        ),
        Ok(Format::Table)
    );
}

#[test]
fn protobuf_only_when_no_json_is_acceptable() {
    assert_eq!(
        format("application/vnd.kubernetes.protobuf,application/json"),
        Ok(Format::Json)
    );
    assert_eq!(
        format("application/vnd.kubernetes.protobuf"),
        Ok(Format::Protobuf)
    );
    assert_eq!(format("text/plain"), Err(406));
}

#[test]
fn an_apply_patch_with_a_raw_control_character_is_refused_as_yaml_refuses_it() {
    let with_del = b"{\"data\":{\"a\":\"x\x7fy\"}}";
    let refused = decode_body(with_del, "application/apply-patch+yaml").unwrap_err();
    assert!(
        format!("{refused:?}").contains("yaml: control characters are not allowed"),
        "{refused:?}"
    );
    // JSON takes it (the schema judges the value), and so does an escaped one in YAML.
    assert!(decode_body(with_del, "application/merge-patch+json").is_ok());
    assert!(decode_body(b"{\"a\": \"x\\u007fy\"}", "application/apply-patch+yaml").is_ok());
}
