#!/usr/bin/env bash
# Runs the whole of Rollcall with simulated readers: no hardware and no configuration needed.
#
#   scripts/demo.sh              # readers -> rollcalld -> Mosquitto -> rollcall-ingest -> PostgreSQL
#   scripts/demo.sh --edge-only  # readers -> rollcalld -> Mosquitto (nothing acks: punches stay queued)
#
# Everything runs as child processes in a temporary directory, on free loopback ports: a private
# Mosquitto; a private PostgreSQL (initdb there; run as the `postgres` system user when this runs
# as root) seeded with a demo campus (scripts/demo-seed.sql: device demo-gateway, 40 students
# DEMO001..DEMO040 enrolled, a class open now in its room); rollcall-ingest in standalone schema
# mode; and rollcalld with a simulated card reader and fingerprint reader presented a random
# student every second (DEMO_EVERY). rollcalld logs "acked punches deleted from the journal" when
# the centre's ack (sent after COMMIT) comes back; every 5 s (DEMO_SUMMARY_EVERY) a `db:` line
# shows what PostgreSQL holds. Stop with Ctrl-C. Try, from another terminal, while it runs:
#   target/debug/rollcalld tap --socket <dir>/state/control.sock card door-card 0000000005
# (target/ is cargo's target directory: $CARGO_TARGET_DIR when set; the demo prints the path.)
set -euo pipefail
cd "$(dirname "$0")/.."
# The binaries are where cargo builds them: CARGO_TARGET_DIR (relative to this directory, as
# cargo reads it) or target/.
bin="${CARGO_TARGET_DIR:-target}/debug"

edge_only=false
for arg in "$@"; do
  case "$arg" in
    --edge-only) edge_only=true ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

scripts/install-deps.sh
if $edge_only; then
  cargo build -p rollcall-daemon --bin rollcalld
else
  cargo build -p rollcall-daemon --bin rollcalld -p rollcall-ingest --bin rollcall-ingest
fi

dir=$(mktemp -d /tmp/rollcall-demo.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
pg_ctl_stop=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$pg_ctl_stop" ] && eval "$pg_ctl_stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  echo "demo state and logs kept in $dir"
}
trap cleanup EXIT

# --- the broker -------------------------------------------------------------------------------
port=$(free_port)
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root"
printf '%s\nlistener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_inflight_messages 0\n' \
  "$user_line" "$port" >"$dir/mosquitto.conf"
"$mosquitto_bin" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
pids+=($!)
echo "demo: broker on 127.0.0.1:$port"

# --- the centre: PostgreSQL and rollcall-ingest ----------------------------------------------
if ! $edge_only; then
  pgbin=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$pgbin/initdb" ] || pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgport=$(free_port)
  pgdir="$dir/pg"
  mkdir "$pgdir"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root: run them as Debian's `postgres` user.
    chmod 755 "$dir"
    chown postgres: "$pgdir"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 --no-locale \
    --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 1; }
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -o \
    "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null
  pg_ctl_stop="${as_pg[*]} $pgbin/pg_ctl -D $pgdir/data -m fast stop"
  psql=("$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -X -q -v ON_ERROR_STOP=1)
  "${psql[@]}" -d postgres -c 'CREATE DATABASE campus'
  echo "demo: PostgreSQL on 127.0.0.1:$pgport, database campus (psql -h 127.0.0.1 -p $pgport -U postgres campus)"

  cat >"$dir/ingest.toml" <<EOF
node_name = "demo"
[database]
url = "postgres://postgres@127.0.0.1:$pgport/campus"
pool_size = 4
schema_mode = "standalone"   # creates the CampsHub360 tables it needs
[mqtt]
url = "mqtt://127.0.0.1:$port"
[campus]
timezone = "UTC"             # the seed stores the class in UTC wall clock
[attendance]
demo_devices = ["demo-gateway"]   # its readers are simulated: count their punches anyway
[jobs]
enabled = false              # no timetable in the demo: the seed opens the class itself
EOF
  "$bin/rollcall-ingest" migrate -c "$dir/ingest.toml" >/dev/null
  "${psql[@]}" -d campus -f scripts/demo-seed.sql
  echo "demo: seeded device demo-gateway (room DEMO-101), students DEMO001..DEMO040, a class open now"
  ROLLCALL_LOG=${INGEST_LOG:-info} "$bin/rollcall-ingest" run -c "$dir/ingest.toml" \
    >"$dir/ingest.log" 2>&1 &
  pids+=($!)
  # A punch published before ingest's subscription is in place has no subscriber and is dropped
  # by the broker; rollcalld would re-send it after its ack timeout, but the demo should not
  # start with a gap (acks are cumulative, so nothing would be acked until then).
  for _ in $(seq 100); do
    grep -q "connected to broker" "$dir/ingest.log" 2>/dev/null && break
    sleep 0.2
  done
  sleep 1
  echo "demo: rollcall-ingest running, log in $dir/ingest.log"

  summary="SELECT 'db: ledger ' || coalesce((SELECT string_agg(outcome || '=' || n, ' ' ORDER BY outcome)
      FROM (SELECT outcome, count(*) AS n FROM rollcall.ledger GROUP BY outcome) o), 'empty')
    || ' | records present=' || (SELECT count(*) FROM attendance_record WHERE mark = 'present')
    || ' late=' || (SELECT count(*) FROM attendance_record WHERE mark = 'late')
    || ' of 40 enrolled | committed up to seq '
    || coalesce((SELECT max(contiguous_seq)::text FROM rollcall.device_cursor
                 WHERE device_id = 'demo-gateway'), '-')"
  (
    while sleep "${DEMO_SUMMARY_EVERY:-5}"; do
      "${psql[@]}" -d campus -A -t -c "$summary" 2>/dev/null || echo "db: (not reachable)"
    done
  ) &
  pids+=($!)
fi

# --- the gateway --------------------------------------------------------------------------------
echo "demo: state in $dir/state"
echo "demo: tap by hand with: $bin/rollcalld tap --socket $dir/state/control.sock card door-card 0000000005"
ROLLCALL_LOG=${ROLLCALL_LOG:-info,rumqttc=warn} "$bin/rollcalld" run --simulate \
  --state-dir "$dir/state" --broker-port "$port" --demo-every "${DEMO_EVERY:-1s}"
