//! The codec against bytes real programs wrote: kubectl 1.35's request bodies
//! (`testdata/kubectl-*.pb`) and a real kube-apiserver 1.36's responses
//! (`testdata/server-*.pb`, with the same objects as the server's JSON in `server-*.json`).

use super::schema::Schema;
use super::*;
use proptest::prelude::*;

macro_rules! fixture {
    ($name:literal) => {
        ($name, include_bytes!(concat!("testdata/", $name)) as &[u8])
    };
}

const KUBECTL: &[(&str, &[u8])] = &[
    fixture!("kubectl-create-namespace.pb"),
    fixture!("kubectl-create-deployment.pb"),
    fixture!("kubectl-create-configmap.pb"),
    fixture!("kubectl-create-secret.pb"),
    fixture!("kubectl-create-service.pb"),
    fixture!("kubectl-create-serviceaccount.pb"),
    fixture!("kubectl-create-pdb.pb"),
];

/// Objects a real API server sent, each as protobuf and as JSON.
const SERVER: &[&str] = &[
    "deployment",
    "secret",
    "service",
    "namespace",
    "status-notfound",
    "replicasetlist",
    "podlist",
    "eventlist",
    "events-v1-list",
    "leaselist",
];

fn server_fixtures() -> Vec<(&'static str, Vec<u8>, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/sandbox/apiserver/protobuf/testdata");
    SERVER
        .iter()
        .map(|name| {
            let pb = std::fs::read(dir.join(format!("server-{name}.pb"))).unwrap();
            let json = std::fs::read(dir.join(format!("server-{name}.json"))).unwrap();
            (*name, pb, serde_json::from_slice(&json).unwrap())
        })
        .collect()
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn decode_any(body: &[u8]) -> Result<Value, ProtoError> {
    decode(body, ("", ""))
}

#[test]
fn the_schema_parses_and_every_kind_has_a_message() {
    let schema = &*SCHEMA;
    assert!(schema.messages.len() > 150, "{}", schema.messages.len());
    for (av, kind) in [
        ("v1", "Pod"),
        ("v1", "ConfigMapList"),
        ("apps/v1", "Deployment"),
        ("events.k8s.io/v1", "Event"),
        ("policy/v1", "Eviction"),
        ("autoscaling/v1", "Scale"),
        ("v1", "Status"),
        ("v1", "WatchEvent"),
    ] {
        assert!(supports(av, kind), "{av} {kind}");
    }
    assert!(!supports("faultline.dev/v1alpha1", "ChaosExperiment"));
    assert!(Schema::parse("message a\n  1 x msg:nowhere\n").is_err());
    assert!(Schema::parse("message a\n  2 x string\n  1 y string\n").is_err());
    assert!(Schema::parse("message a\n  1 x string sometimes\n").is_err());
}

#[test]
fn kubectl_request_bodies_decode_to_the_objects_kubectl_meant() {
    let ns = decode_any(KUBECTL[0].1).unwrap();
    // Empty strings and zero messages kubectl sends for Go's value fields are left out.
    assert_eq!(
        ns,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"},
               "spec": {}, "status": {}})
    );
    let deploy = decode_any(KUBECTL[1].1).unwrap();
    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"], json!([{"containerPort": 80}]));
    assert_eq!(container["resources"], json!({}));
    let cm = decode_any(KUBECTL[2].1).unwrap();
    assert_eq!(cm["data"], json!({"color": "blue", "size": "10"}));
    let secret = decode_any(KUBECTL[3].1).unwrap();
    // "s3cr3t", base64 in JSON.
    assert_eq!(secret["data"], json!({"password": "czNjcjN0"}));
    let svc = decode_any(KUBECTL[4].1).unwrap();
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    let pdb = decode_any(KUBECTL[6].1).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn kubectl_request_bodies_encode_back_to_the_same_bytes() {
    for (name, bytes) in KUBECTL {
        let obj = decode_any(bytes).unwrap();
        assert_eq!(encode(&obj).unwrap(), *bytes, "{name}: {obj}");
    }
}

#[test]
fn server_objects_decode_to_the_servers_json_and_encode_to_its_bytes() {
    for (name, pb, json) in server_fixtures() {
        let decoded = decode_any(&pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Go writes a zero time of a value field as `null`; the decoder leaves it out.
        assert_eq!(decoded, without_nulls(&json), "{name}");
        assert_eq!(encode(&json).unwrap(), pb, "{name}");
    }
}

#[test]
fn a_watch_frame_is_length_prefixed_with_the_object_inside() {
    let frame = include_bytes!("testdata/server-watch-error-frame.bin");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    // The event is a WatchEvent whose object.raw is a whole encoded object.
    let event = decode::message(
        &SCHEMA,
        SCHEMA.kind("v1", "WatchEvent").unwrap(),
        &frame[4..],
        0,
    )
    .unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["kind"], "Status");
    assert_eq!(event["object"]["code"], 504);
    assert_eq!(watch_frame("ERROR", &event["object"]).unwrap(), frame);
}

#[test]
fn unknown_fields_are_refused_with_the_message_and_number() {
    // A ConfigMap whose metadata carries field 1000 (varint 1).
    let meta = [0x0a, 0x02, b'c', b'm', 0xc0, 0x3e, 0x01];
    let mut raw = vec![0x0a, meta.len() as u8];
    raw.extend_from_slice(&meta);
    let body = envelope("v1", "ConfigMap", &raw);
    let err = decode_any(&body).unwrap_err();
    assert_eq!(
        err,
        ProtoError::UnknownField {
            message: "meta.v1.ObjectMeta".into(),
            number: 1000
        }
    );
    assert!(
        err.to_string().contains("field 1000 of meta.v1.ObjectMeta"),
        "{err}"
    );
    // The same at the top level of the object, and inside the envelope.
    assert!(matches!(
        decode_any(&envelope("v1", "ConfigMap", &[0xf8, 0x01, 0x00])),
        Err(ProtoError::UnknownField { number: 31, .. })
    ));
    let mut odd = envelope("v1", "ConfigMap", &[]);
    odd.extend_from_slice(&[0x2a, 0x00]);
    assert!(matches!(
        decode_any(&odd),
        Err(ProtoError::UnknownField { number: 5, .. })
    ));
}

#[test]
fn custom_resources_and_bodies_without_the_magic_are_refused() {
    let cr = envelope("faultline.dev/v1alpha1", "ChaosExperiment", &[]);
    assert!(matches!(
        decode_any(&cr),
        Err(ProtoError::UnknownKind { .. })
    ));
    assert_eq!(decode_any(b"{\"kind\":\"Pod\"}"), Err(ProtoError::NoMagic));
    assert!(
        encode(&json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment"}))
            .is_err()
    );
}

#[test]
fn an_empty_type_meta_takes_the_kind_of_the_url() {
    let mut w = Writer {
        buf: MAGIC.to_vec(),
    };
    w.bytes_field(1, &[]);
    w.bytes_field(2, &[0x0a, 0x04, 0x0a, 0x02, b'c', b'm']);
    let obj = decode(&w.buf, ("v1", "ConfigMap")).unwrap();
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(obj["metadata"]["name"], "cm");
}

#[test]
fn json_round_trips_through_protobuf() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "d", "generation": 3,
                     "creationTimestamp": "2026-01-02T03:04:05Z",
                     "deletionGracePeriodSeconds": 0,
                     "labels": {"b": "2", "a": "1"}, "finalizers": ["x", "y"]},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "c", "image": "i",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "initialDelaySeconds": -1},
                "readinessProbe": {"tcpSocket": {"port": 8080}}
            }],
            "volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}],
            "securityContext": {"supplementalGroups": [1, 2]}
        },
        "status": {"phase": "Running", "startTime": "2026-01-02T03:04:05Z"}
    });
    let back = decode_any(&encode(&pod).unwrap()).unwrap();
    assert_eq!(back, pod);
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e"},
        // Go holds it by value: written even when empty, so it comes back as {}.
        "deprecatedSource": {},
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "reason": "Started", "regarding": {"kind": "Pod", "name": "p"}
    });
    assert_eq!(decode_any(&encode(&event).unwrap()).unwrap(), event);
}

#[test]
fn encoding_refuses_values_of_the_wrong_type() {
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}});
    let err = encode(&bad).unwrap_err();
    assert!(
        err.to_string().contains("spec.replicas must be an int32"),
        "{err}"
    );
    let bad = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}});
    assert!(encode(&bad).is_err());
}

#[test]
fn bodies_cut_inside_the_object_are_errors() {
    for (name, bytes) in KUBECTL {
        // magic, typeMeta (key, length, content), then raw's key and length.
        let raw_key = 4 + 2 + bytes[5] as usize;
        assert_eq!(bytes[raw_key], 0x12, "{name}");
        let raw_len = Reader::new(&bytes[raw_key + 1..]).bytes().unwrap().len();
        let raw_end = raw_key + 1 + varint_len(&bytes[raw_key + 1..]) + raw_len;
        for cut in raw_key + 1..raw_end {
            assert!(decode_any(&bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
    }
}

/// Length of the varint at the start of `b`.
fn varint_len(b: &[u8]) -> usize {
    b.iter().position(|x| *x < 0x80).unwrap() + 1
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Writer::default();
    tm.bytes_field(1, api_version.as_bytes());
    tm.bytes_field(2, kind.as_bytes());
    let mut w = Writer {
        buf: MAGIC.to_vec(),
    };
    w.bytes_field(1, &tm.buf);
    w.bytes_field(2, raw);
    w.buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bodies_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_any(&envelope("v1", "Pod", &raw));
        let _ = decode_any(&envelope("apps/v1", "Deployment", &raw));
        let _ = decode_any(&raw);
    }

    #[test]
    fn mutated_real_bodies_never_panic(
        which in 0..KUBECTL.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut body = KUBECTL[which].1.to_vec();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Ok(obj) = decode_any(&body) {
            // Whatever decodes also encodes.
            prop_assert!(encode(&obj).is_ok(), "{obj}");
        }
    }
}
