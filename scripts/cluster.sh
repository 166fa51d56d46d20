#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, for faultline's tests and for trying faultline
# on the real thing: etcd, kube-apiserver, kube-controller-manager and kube-scheduler, all on
# 127.0.0.1, built from the Go modules of one Kubernetes release (scripts/controlplane/go.mod).
#
#   scripts/cluster.sh build    build (or reuse) the binaries; a warm machine does no Go work
#   scripts/cluster.sh up       build if needed, make certificates, start everything, wait ready
#   scripts/cluster.sh down     stop everything this script started and remove its state
#   scripts/cluster.sh status   say what runs
#   scripts/cluster.sh env      print `export KUBECONFIG=...` for this cluster
#
# There is no kubelet: Nodes and pods are played by faultline's workload simulator
# (`faultline sandbox kubelet`), which heartbeats its Nodes and runs the pods the real scheduler
# binds to them. State (certificates, etcd data, logs, PID files, kubeconfigs) lives in
# .faultline/cluster/ (FAULTLINE_CLUSTER_DIR), binaries in .tools/controlplane/<release>/bin.
# FAULTLINE_CLUSTER_PROFILING=true serves the API server's /debug/pprof (to see where its CPU
# goes: `go tool pprof -top` on a profile fetched with the admin certificate).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
release="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$repo_root/scripts/controlplane/go.mod")"
[[ -n "$release" ]] || { echo "cluster: no k8s.io/kubernetes version in scripts/controlplane/go.mod" >&2; exit 1; }
bin_dir="$repo_root/.tools/controlplane/$release/bin"
state="${FAULTLINE_CLUSTER_DIR:-$repo_root/.faultline/cluster}"
api_port="${FAULTLINE_CLUSTER_PORT:-16443}"
etcd_port="${FAULTLINE_CLUSTER_ETCD_PORT:-12379}"
kcm_port="${FAULTLINE_CLUSTER_KCM_PORT:-10257}"
sched_port="${FAULTLINE_CLUSTER_SCHEDULER_PORT:-10259}"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# Where scripts/setup.sh --cluster-build-in-background writes the build's output.
build_log="$repo_root/.tools/controlplane/build.log"

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

ensure_etcd() {
    command -v etcd >/dev/null 2>&1 && return
    log "installing Debian's etcd-server (etcd 3.4; the API server logs that it lacks RequestWatchProgress: harmless)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
}

build() {
    ensure_etcd
    mkdir -p "$bin_dir"
    # One build at a time: `make test` starts one in the background (scripts/setup.sh
    # --cluster-build-in-background) and `up` waits here for it rather than starting a second.
    exec {lock}>"$bin_dir/.build.lock"
    if ! flock -n "$lock"; then
        log "waiting for the control plane build already under way (log: $build_log)"
        flock "$lock"
    fi
    local missing=()
    for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
        [[ -x "$bin_dir/$cmd" ]] || missing+=("k8s.io/kubernetes/cmd/$cmd")
    done
    if ((${#missing[@]} == 0)); then
        exec {lock}>&-
        return
    fi
    command -v go >/dev/null 2>&1 || die "Go is needed to build the control plane ($release) and is not installed"
    log "building ${missing[*]##*/} from k8s.io/kubernetes $release (about 5 minutes on 2 cores the first time; the Go build cache makes later builds quick)"
    local started=$SECONDS
    # The version the binaries report (`kubectl version`, discovery); Kubernetes' own build
    # stamps it the same way. Without it they say v0.0.0-master, which helm's kubeVersion check
    # and kubectl's version skew warning refuse.
    local minor=${release#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    (cd "$repo_root/scripts/controlplane" && GOFLAGS="-mod=mod -trimpath" go build -ldflags="$ldflags" -o "$bin_dir/" "${missing[@]}")
    log "built in $((SECONDS - started)) s into $bin_dir"
    exec {lock}>&-
}

pid_of() {
    local file="$state/$1.pid"
    [[ -f "$file" ]] || return 1
    local pid
    pid="$(cat "$file")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

running() { pid_of kube-apiserver >/dev/null; }

# A key and a certificate signed by the cluster CA. $1 name, $2 subject, $3 extensions (or "").
issue_cert() {
    local name=$1 subject=$2 ext=$3
    openssl genrsa -out "$state/pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$state/pki/$name.key" -subj "$subject" -out "$state/pki/$name.csr" 2>/dev/null
    local extfile="$state/pki/$name.ext"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" >"$extfile"
    [[ -n "$ext" ]] && printf '%s\n' "$ext" >>"$extfile"
    openssl x509 -req -in "$state/pki/$name.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
        -CAcreateserial -days 365 -sha256 -extfile "$extfile" -out "$state/pki/$name.crt" 2>/dev/null
    rm -f "$state/pki/$name.csr" "$extfile"
}

certificates() {
    [[ -f "$state/pki/admin.crt" ]] && return
    mkdir -p "$state/pki"
    openssl genrsa -out "$state/pki/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$state/pki/ca.key" -subj "/CN=faultline-test-ca" -days 365 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$state/pki/ca.crt" 2>/dev/null
    issue_cert apiserver "/CN=kube-apiserver" \
        "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue_cert admin "/O=system:masters/CN=faultline-test-admin" "extendedKeyUsage=clientAuth"
    issue_cert kube-controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    issue_cert kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    openssl genrsa -out "$state/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$state/pki/sa.key" -pubout -out "$state/pki/sa.pub" 2>/dev/null
}

kubeconfig() {
    local user=$1 out=$2
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: faultline-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $state/pki/$user.crt
    client-key: $state/pki/$user.key
contexts:
- name: faultline-test
  context: {cluster: faultline-test, user: $user}
current-context: faultline-test
EOF
}

start() {
    local name=$1
    shift
    "$@" >"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/$name.pid"
}

wait_healthy() {
    local what=$1 url=$2 deadline=$((SECONDS + 60))
    shift 2
    until curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            tail -n 30 "$state/logs/$what.log" >&2 || true
            die "$what did not become healthy within 60 s (log: $state/logs/$what.log)"
        fi
        pid_of "$what" >/dev/null || { tail -n 30 "$state/logs/$what.log" >&2; die "$what exited (log: $state/logs/$what.log)"; }
        sleep 0.2
    done
}

up() {
    if running; then
        log "already running (kubeconfig: $state/admin.kubeconfig)"
        return
    fi
    build
    down_quiet
    mkdir -p "$state/logs" "$state/flex-volume"
    certificates
    kubeconfig admin "$state/admin.kubeconfig"
    kubeconfig kube-controller-manager "$state/kube-controller-manager.kubeconfig"
    kubeconfig kube-scheduler "$state/kube-scheduler.kubeconfig"
    local started=$SECONDS pki="$state/pki"

    start etcd etcd --name faultline-test --data-dir "$state/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-cluster "faultline-test=http://127.0.0.1:$((etcd_port + 1))" \
        --quota-backend-bytes 2147483648 --unsafe-no-fsync
    wait_healthy etcd "http://127.0.0.1:$etcd_port/health"

    # --endpoint-reconciler-type=none: the API server refuses 127.0.0.1 as the endpoint of the
    # `kubernetes` Service, and nothing here routes a ClusterIP anyway.
    start kube-apiserver "$bin_dir/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --endpoint-reconciler-type none \
        --service-cluster-ip-range 10.96.0.0/16 \
        --client-ca-file "$pki/ca.crt" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --authorization-mode Node,RBAC --allow-privileged \
        --profiling="${FAULTLINE_CLUSTER_PROFILING:-false}"
    wait_healthy kube-apiserver "https://127.0.0.1:$api_port/readyz" --cacert "$pki/ca.crt" \
        --cert "$pki/admin.crt" --key "$pki/admin.key"

    start kube-controller-manager "$bin_dir/kube-controller-manager" \
        --kubeconfig "$state/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig "$state/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig "$state/kube-controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$kcm_port" \
        --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --flex-volume-plugin-dir "$state/flex-volume" \
        --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
        --kube-api-qps 200 --kube-api-burst 400
    start kube-scheduler "$bin_dir/kube-scheduler" \
        --kubeconfig "$state/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig "$state/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$state/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false
    wait_healthy kube-controller-manager "https://127.0.0.1:$kcm_port/healthz" -k
    wait_healthy kube-scheduler "https://127.0.0.1:$sched_port/healthz" -k
    log "up in $((SECONDS - started)) s: Kubernetes $release at https://127.0.0.1:$api_port"
    log "export KUBECONFIG=$state/admin.kubeconfig"
}

stop_all() {
    local name pid
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
        if pid="$(pid_of "$name")"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$state/$name.pid"
    done
}

down_quiet() {
    stop_all
    rm -rf "$state/etcd"
}

down() {
    stop_all
    rm -rf "$state"
    log "down"
}

status() {
    local name pid
    for name in "${components[@]}"; do
        if pid="$(pid_of "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
        fi
    done
    running && echo "KUBECONFIG=$state/admin.kubeconfig"
    return 0
}

case "${1:-}" in
build) build; echo "$bin_dir" ;;
up) up ;;
down) down ;;
status) status ;;
env) echo "export KUBECONFIG=$state/admin.kubeconfig" ;;
*) die "usage: $0 build|up|down|status|env" ;;
esac
