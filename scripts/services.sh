#!/usr/bin/env bash
# Run a real Apache Kafka 4.x broker (KRaft, one combined node, 127.0.0.1:9092) and a real
# Apache Cassandra 5.0 node (127.0.0.1:9042) from their Maven Central jars, without Docker, and
# Shopify's Toxiproxy (API 127.0.0.1:8474, built with `go install`) with a proxy `cassandra`
# from 127.0.0.1:19042 to the node and a proxy `kafka` from 127.0.0.1:19092 to the broker's
# second listener (127.0.0.1:9094, which advertises the proxy's address, so a client that
# bootstraps through the proxy keeps talking through it), for fault-injection tests.
#
#   scripts/services.sh up      [kafka|cassandra|toxiproxy]   fetch (once), start, wait until they answer
#   scripts/services.sh down    [kafka|cassandra|toxiproxy]   stop what `up` started (pid files only)
#   scripts/services.sh restart [kafka|cassandra|toxiproxy]
#   scripts/services.sh crash   [kafka|cassandra|toxiproxy]   SIGKILL what `up` started (a crash, for fault tests)
#   scripts/services.sh status  [kafka|cassandra|toxiproxy]   exit 0 if all named services run, 3 otherwise
#   scripts/services.sh cql "SELECT ..."            one CQL statement (stand-in for cqlsh -e)
#   scripts/services.sh kafka-tool MAINCLASS ARGS   a Kafka CLI class, e.g. org.apache.kafka.tools.TopicCommand
#
# Everything made at run time (classpaths, data, logs, pid files) lives under one folder:
# $WATTFLOW_SERVICES_DIR, default <repo>/.services (git-ignored). Data survives restarts.
# Environment: WATTFLOW_SERVICES_TIMEOUT (seconds to wait for each service, default 240: Cassandra
# on a busy 2-core machine is slow), WATTFLOW_JAVA (a java binary to use), WATTFLOW_KAFKA_VERSIONS,
# WATTFLOW_CASSANDRA_VERSIONS (space-separated versions to try in order), CASSANDRA_HEAP_MB
# (Cassandra's heap, default 2048; half of it holds memtables), WATTFLOW_TOXIPROXY_VERSION.
# Facts behind the flags below: shared/docs/INFRA.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/services
SVC_DIR=${WATTFLOW_SERVICES_DIR:-$ROOT/.services}
TIMEOUT=${WATTFLOW_SERVICES_TIMEOUT:-240}
# The first is the wanted version; later ones are fallbacks in case the registry refuses it.
read -r -a KAFKA_VERSIONS <<<"${WATTFLOW_KAFKA_VERSIONS:-4.4.0 4.1.0 4.0.0}"
read -r -a CASSANDRA_VERSIONS <<<"${WATTFLOW_CASSANDRA_VERSIONS:-5.0.8 5.0.7 5.0.6 5.0.5 5.0.4}"
TOXIPROXY_VERSION=${WATTFLOW_TOXIPROXY_VERSION:-2.12.0}
ALL_SERVICES=(kafka cassandra toxiproxy)

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

# --- layout -----------------------------------------------------------------------------------

# Absolute, so the paths baked into configs and command lines do not depend on the caller's cwd.
mkdir -p "$SVC_DIR"
SVC_DIR=$(cd "$SVC_DIR" && pwd)
mkdir -p "$SVC_DIR"/{lib,data,logs,run,conf}

lib_dir() { printf '%s/lib/%s' "$SVC_DIR" "$1"; }
data_dir() { printf '%s/data/%s' "$SVC_DIR" "$1"; }
log_file() { printf '%s/logs/%s.log' "$SVC_DIR" "$1"; }
pid_file() { printf '%s/run/%s.pid' "$SVC_DIR" "$1"; }
port_of() { case $1 in kafka) echo 9092 ;; cassandra) echo 9042 ;; toxiproxy) echo 8474 ;; esac; }
# Other ports each service binds; checked so a foreign process there is reported, not fought.
side_ports_of() { case $1 in kafka) echo 9093 9094 ;; cassandra) echo 7000 ;; toxiproxy) echo 19042 19092 ;; esac; }
main_class_of() {
  case $1 in
    kafka) echo kafka.Kafka ;;
    cassandra) echo org.apache.cassandra.service.CassandraDaemon ;;
    toxiproxy) echo toxiproxy-server ;;
  esac
}

# --- process and port checks ------------------------------------------------------------------

port_open() {
  # bash's /dev/tcp needs no netcat (not installed here); timeout guards against a hung SYN.
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash, on purpose
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Prints the pid from the service's pid file if that process is alive AND is the JVM this script
# started (its command line names our services dir and main class). A recycled pid that now
# belongs to some other program is therefore never reported, so never signalled.
our_pid() {
  local svc=$1 pf pid cmd
  pf=$(pid_file "$svc")
  if [[ -f $pf ]]; then
    pid=$(<"$pf")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || cmd=""
      if [[ $cmd == *"$SVC_DIR"* && $cmd == *"$(main_class_of "$svc")"* ]]; then
        echo "$pid"
        return 0
      fi
    fi
  fi
  # The pid file can name a launcher that forked (setsid forks when it happens to lead a
  # process group): find our JVM by its command line instead, and remember it.
  local pattern="-Dwattflow.services=$SVC_DIR .*$(main_class_of "$svc")"
  [[ $svc == toxiproxy ]] && pattern="^$(lib_dir toxiproxy)/toxiproxy-server "
  pid=$(pgrep -f -- "$pattern" | head -n 1) || true
  [[ -n $pid ]] || return 1
  echo "$pid" >"$pf"
  echo "$pid"
}

# --- java and maven ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need '$*' but not root: install it (apt-get install $*) and retry"
  command -v apt-get >/dev/null || die "need '$*' and apt-get is not available"
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

java_major() {
  local v
  v=$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}') || return 1
  [[ -n $v ]] || return 1
  v=${v#1.} # "1.8.0_x" style
  echo "${v%%[.+-]*}"
}

# Java 17 for both: Kafka 4.x needs 17+, Cassandra 5.0 supports 11/17 and dies on 24+
# (System.setSecurityManager is gone there). So prefer exactly 17, accept 18-23 with a warning.
JAVA=
pick_java() {
  [[ -n $JAVA ]] && return 0
  local c m fallback=
  local candidates=()
  [[ -n ${WATTFLOW_JAVA:-} ]] && candidates+=("$WATTFLOW_JAVA")
  [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
  candidates+=(/usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/*17*/bin/java)
  command -v java >/dev/null && candidates+=("$(command -v java)")
  for c in "${candidates[@]}"; do
    [[ -x $c ]] || continue
    m=$(java_major "$c") || continue
    if [[ $m -eq 17 ]]; then
      JAVA=$c
      break
    fi
    if [[ -z $fallback && $m -gt 17 && $m -lt 24 ]]; then fallback=$c; fi
  done
  if [[ -z $JAVA && -n $fallback ]]; then
    JAVA=$fallback
    warn "no Java 17 found, using $JAVA (Java $(java_major "$JAVA")); Cassandra 5.0 is only supported on 17"
  fi
  if [[ -z $JAVA ]]; then
    apt_install openjdk-17-jre-headless
    JAVA=$(compgen -G '/usr/lib/jvm/java-17-openjdk-*/bin/java' | head -n1) || true
    [[ -x $JAVA ]] || die "could not find or install a Java 17"
  fi
  # Maven must run on the same JDK (it reads JAVA_HOME).
  JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$JAVA")")")
  export JAVA_HOME
}

ensure_maven() {
  command -v mvn >/dev/null || apt_install maven
}

# --- fetching the classpaths ------------------------------------------------------------------

# The jars that must be there for a fetch to count (a Maven run can "succeed" yet miss things).
fetch_ok() {
  local svc=$1 dir=$2 v=$3
  case $svc in
    kafka)
      [[ -f $dir/kafka_2.13-$v.jar && -f $dir/kafka-tools-$v.jar ]] &&
        compgen -G "$dir/log4j-core-2.*.jar" >/dev/null &&
        compgen -G "$dir/log4j-slf4j2-impl-2.*.jar" >/dev/null &&
        compgen -G "$dir/slf4j-api-2.*.jar" >/dev/null
      ;;
    cassandra)
      [[ -f $dir/cassandra-all-$v.jar ]] &&
        compgen -G "$dir/jamm-*.jar" >/dev/null &&
        compgen -G "$dir/logback-classic-*.jar" >/dev/null
      ;;
  esac
}

# Gathers the runtime classpath into .services/lib/<svc> once. The marker records the version and
# a hash of the POM: while both match, Maven is not run at all, so later `up`s work offline.
fetch() {
  local svc=$1 dir pom prop marker pom_hash tmp flog v
  if [[ $svc == toxiproxy ]]; then
    fetch_toxiproxy
    return
  fi
  dir=$(lib_dir "$svc")
  pom=$HERE/$svc-pom.xml
  prop=$svc.version
  marker=$dir/.fetched
  pom_hash=$(sha256sum "$pom" | cut -c1-16)
  if [[ -f $marker ]] && [[ $(cut -d' ' -f2 "$marker") == "$pom_hash" ]] &&
    fetch_ok "$svc" "$dir" "$(cut -d' ' -f1 "$marker")"; then
    return 0
  fi
  pick_java
  ensure_maven
  local versions=()
  case $svc in
    kafka) versions=("${KAFKA_VERSIONS[@]}") ;;
    cassandra) versions=("${CASSANDRA_VERSIONS[@]}") ;;
  esac
  flog=$SVC_DIR/logs/fetch-$svc.log
  tmp=$dir.partial
  for v in "${versions[@]}"; do
    log "fetching $svc $v with Maven (log: $flog)"
    rm -rf "$tmp"
    # -q: Cassandra's parent POM makes Maven complain about system-scoped ${jmc5.path} artifacts
    # of sjk (profiling extras that are never pulled); harmless, and fetch_ok checks the result.
    if mvn -B -q -f "$pom" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime -D"$prop=$v" >"$flog" 2>&1 &&
      fetch_ok "$svc" "$tmp" "$v"; then
      rm -rf "$dir"
      mv "$tmp" "$dir"
      echo "$v $pom_hash" >"$marker"
      log "$svc $v: $(find "$dir" -name '*.jar' | wc -l) jars in $dir"
      return 0
    fi
    warn "$svc $v could not be fetched; last lines of $flog:"
    tail -n 15 "$flog" >&2 || true
  done
  rm -rf "$tmp"
  die "no $svc version could be fetched (tried ${versions[*]})"
}

version_of() { cut -d' ' -f1 "$(lib_dir "$1")/.fetched"; }

# --- configs ----------------------------------------------------------------------------------

# Plain string replacement in bash: paths may contain characters sed would treat specially.
render() {
  local template=$1 out=$2 key=$3 value=$4 text
  text=$(<"$template")
  printf '%s\n' "${text//"$key"/"$value"}" >"$out"
}

# --- kafka ------------------------------------------------------------------------------------

kafka_java() {
  # $1: log4j2 config. Small heap: tests push little data and the machine has other work to do.
  local cfg=$1
  shift
  "$JAVA" -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$cfg" -cp "$(lib_dir kafka)/*" "$@"
}

start_kafka() {
  local data conf logf pf uuid
  data=$(data_dir kafka)
  conf=$SVC_DIR/conf/server.properties
  logf=$(log_file kafka)
  pf=$(pid_file kafka)
  mkdir -p "$data"
  render "$HERE/server.properties.template" "$conf" @KAFKA_DATA_DIR@ "$data"
  # Keep the previous run's log for post-mortems; the readiness check reads only this run's.
  [[ -f $logf ]] && mv -f "$logf" "$logf.prev"
  : >"$logf"
  # Format exactly once: re-formatting would wipe the topics that must survive a restart.
  if [[ ! -f $data/meta.properties ]]; then
    uuid=$(kafka_java "$HERE/log4j2-cli.properties" kafka.tools.StorageTool random-uuid 2>>"$logf" | tail -n1)
    [[ -n $uuid ]] || die "kafka StorageTool random-uuid failed; see $logf"
    log "formatting kafka storage (cluster id $uuid)"
    kafka_java "$HERE/log4j2-cli.properties" kafka.tools.StorageTool \
      format -t "$uuid" -c "$conf" --standalone >>"$logf" 2>&1 ||
      die "kafka storage format failed; see $logf"
  fi
  # setsid: own session, so a Ctrl-C or a signal to the caller's process group leaves it alone.
  # In a non-interactive shell the child is not a group leader, so setsid execs in place and $!
  # is the JVM's pid itself (our_pid double-checks via /proc/PID/cmdline).
  setsid nohup "$JAVA" -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dwattflow.services="$SVC_DIR" \
    -cp "$(lib_dir kafka)/*" kafka.Kafka "$conf" >>"$logf" 2>&1 </dev/null &
  echo $! >"$pf"
}

kafka_ready() {
  # The log line first: it is free, while each admin-client probe costs a JVM start.
  grep -q 'Kafka Server started' "$(log_file kafka)" || return 1
  # Then a real metadata round trip, not just an open port: list topics through the admin client.
  timeout 60 "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$HERE/log4j2-cli.properties" \
    -cp "$(lib_dir kafka)/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server 127.0.0.1:9092 --list >/dev/null 2>&1
}

# --- toxiproxy --------------------------------------------------------------------------------

go_binary() {
  local g
  for g in "$(command -v go 2>/dev/null)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    [[ -n $g && -x $g ]] && {
      echo "$g"
      return 0
    }
  done
  apt_install golang-go
  command -v go
}

# Builds toxiproxy-server from the Go module proxy once (a few seconds; the module cache is Go's).
fetch_toxiproxy() {
  local dir marker go flog
  dir=$(lib_dir toxiproxy)
  marker=$dir/.fetched
  if [[ -f $marker && -x $dir/toxiproxy-server ]] && [[ $(cut -d' ' -f1 "$marker") == "$TOXIPROXY_VERSION" ]]; then
    return 0
  fi
  go=$(go_binary) || die "toxiproxy needs Go: install it (apt-get install golang-go) and retry"
  flog=$SVC_DIR/logs/fetch-toxiproxy.log
  log "building toxiproxy $TOXIPROXY_VERSION with $go (log: $flog)"
  mkdir -p "$dir.partial"
  if ! GOBIN="$dir.partial" GOFLAGS=-mod=mod "$go" install \
    "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" >"$flog" 2>&1; then
    tail -n 15 "$flog" >&2 || true
    die "could not build toxiproxy $TOXIPROXY_VERSION"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$dir.partial/server" "$dir/toxiproxy-server"
  rm -rf "$dir.partial"
  echo "$TOXIPROXY_VERSION go" >"$marker"
}

start_toxiproxy() {
  setsid "$(lib_dir toxiproxy)/toxiproxy-server" -host 127.0.0.1 -port 8474 \
    >"$(log_file toxiproxy)" 2>&1 </dev/null &
  echo $! >"$(pid_file toxiproxy)"
}

# Ready once the API answers and the proxies exist (created here: toxiproxy keeps none across
# restarts). A test that changes a proxy puts it back as it found it.
toxiproxy_ready() {
  python3 - <<'PY'
import json, sys, urllib.request, urllib.error
api = "http://127.0.0.1:8474"
want = {"cassandra": ("127.0.0.1:19042", "127.0.0.1:9042"),
        "kafka": ("127.0.0.1:19092", "127.0.0.1:9094")}
try:
    have = json.load(urllib.request.urlopen(api + "/proxies", timeout=5))
    for name, (listen, upstream) in want.items():
        if name in have:
            continue
        body = json.dumps({"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        req = urllib.request.Request(api + "/proxies", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5)
except (OSError, urllib.error.URLError, ValueError):
    sys.exit(1)
PY
}

# --- cassandra --------------------------------------------------------------------------------

start_cassandra() {
  local data conf logf pf lib jamm
  data=$(data_dir cassandra)
  conf=$SVC_DIR/conf/cassandra.yaml
  logf=$(log_file cassandra)
  pf=$(pid_file cassandra)
  lib=$(lib_dir cassandra)
  mkdir -p "$data"/{data,commitlog,saved_caches,hints,cdc_raw,triggers}
  render "$HERE/cassandra.yaml.template" "$conf" @CASSANDRA_DATA_DIR@ "$data"
  # Half the heap holds memtables: the speed views rewrite the same rows many times, and a
  # large memtable merges those rewrites in memory instead of flushing and compacting them.
  local heap_mb=${CASSANDRA_HEAP_MB:-2048}
  render "$conf" "$conf" @CASSANDRA_MEMTABLE_MB@ $((heap_mb / 2))
  jamm=$(compgen -G "$lib/jamm-*.jar" | head -n1)
  [[ -f $logf ]] && mv -f "$logf" "$logf.prev"
  : >"$logf"
  local opts=(
    -Xms${heap_mb}m -Xmx${heap_mb}m -Xss256k -XX:+UseG1GC -XX:MaxGCPauseMillis=300 -XX:+PerfDisableSharedMem
    # Cassandra's own advice: dying on OOM beats running on with possibly corrupt state.
    -XX:+ExitOnOutOfMemoryError
    # jamm measures object sizes for memtable accounting; without the agent Cassandra refuses to start.
    -javaagent:"$jamm" -Djdk.attach.allowAttachSelf=true
    -Djava.net.preferIPv4Stack=true -Dio.netty.tryReflectionSetAccessible=true
    -Dcassandra-foreground=yes
    -Dcassandra.config=file://"$conf"
    -Dcassandra.storagedir="$data"
    -Dcassandra.logdir="$SVC_DIR/logs"
    -Dcassandra.triggers_dir="$data/triggers"
    -Dlogback.configurationFile="$HERE/logback.xml"
    # Single node: skip the waits meant for gossip with peers (start ~50 s -> ~12 s on a fast box).
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=0
    -Dcassandra.load_ring_state=false -Dcassandra.initial_token=0
    -Dcassandra.superuser_setup_delay_ms=0
    -Dwattflow.services="$SVC_DIR"
  )
  # Cassandra's conf/jvm17-server.options: without these the JVM dies at start on Java 17.
  local m
  for m in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
    java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql java.base/java.lang.ref \
    jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach \
    java.management/com.sun.jmx.remote.security; do
    opts+=(--add-exports "$m=ALL-UNNAMED")
  done
  for m in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
    java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
    java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal java.base/sun.nio.ch \
    java.base/java.io java.base/java.lang.reflect jdk.compiler/com.sun.tools.javac java.base/java.lang \
    java.base/java.util java.base/java.nio; do
    opts+=(--add-opens "$m=ALL-UNNAMED")
  done
  # See start_kafka for why setsid + $! gives the JVM's own pid.
  setsid nohup "$JAVA" "${opts[@]}" -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >>"$logf" 2>&1 </dev/null &
  echo $! >"$pf"
}

cql() {
  python3 "$HERE/cql.py" "$@"
}

cassandra_ready() {
  # A real CQL round trip when python3 is there (stdlib only); else the log line plus the port.
  if command -v python3 >/dev/null; then
    cql --timeout 5 "SELECT release_version FROM system.local" >/dev/null 2>&1
  else
    grep -q 'Starting listening for CQL clients' "$(log_file cassandra)" && port_open 9042
  fi
}

# --- generic service control ------------------------------------------------------------------

# Start one service unless it already runs. Returns after launching; wait_ready does the waiting.
declare -A START_TIME=()
start_service() {
  local svc=$1 pid port side
  port=$(port_of "$svc")
  if pid=$(our_pid "$svc"); then
    if port_open "$port"; then
      log "$svc already running (pid $pid, port $port answers): left alone"
    else
      log "$svc already starting (pid $pid): waiting for it"
    fi
    START_TIME[$svc]=$SECONDS
    return 0
  fi
  rm -f "$(pid_file "$svc")"
  for side in "$port" $(side_ports_of "$svc"); do
    if port_open "$side"; then
      die "port $side is already taken by a process this script did not start (services dir $SVC_DIR); stop it first"
    fi
  done
  fetch "$svc"
  [[ $svc == toxiproxy ]] || pick_java
  log "starting $svc $(version_of "$svc") (log: $(log_file "$svc"))"
  "start_$svc"
  START_TIME[$svc]=$SECONDS
}

wait_ready() {
  local svc=$1 port logf start pid
  port=$(port_of "$svc")
  logf=$(log_file "$svc")
  start=${START_TIME[$svc]}
  while :; do
    if ! pid=$(our_pid "$svc"); then
      warn "$svc exited during start-up; last 40 lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      rm -f "$(pid_file "$svc")"
      exit 1
    fi
    if port_open "$port" && "${svc}_ready"; then
      log "$svc ready on 127.0.0.1:$port after $((SECONDS - start)) s (pid $pid)"
      return 0
    fi
    if ((SECONDS - start >= TIMEOUT)); then
      warn "$svc did not answer on 127.0.0.1:$port within $TIMEOUT s (set WATTFLOW_SERVICES_TIMEOUT to wait longer);"
      warn "it is left running as pid $pid ('$0 down $svc' stops it). Last 40 lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      exit 1
    fi
    sleep 2
  done
}

# Waits up to $2 half-seconds for pid $1 to be gone; returns 1 if it is still there.
wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  ! kill -0 "$pid" 2>/dev/null
}

stop_service() {
  local svc=$1 pid
  if ! pid=$(our_pid "$svc"); then
    log "$svc not running"
    rm -f "$(pid_file "$svc")"
    return 0
  fi
  log "stopping $svc (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # Both shut down cleanly on SIGTERM (Kafka: controlled shutdown, Cassandra: drain); give them 30 s.
  if ! wait_gone "$pid" 60; then
    warn "$svc (pid $pid) still alive after 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 20 || true
  fi
  rm -f "$(pid_file "$svc")"
  log "$svc stopped"
}

# SIGKILL, no shutdown: what a power cut or the OOM killer does. The data stays for the next `up`.
crash_service() {
  local svc=$1 pid
  if ! pid=$(our_pid "$svc"); then
    log "$svc not running"
    return 0
  fi
  log "crashing $svc (SIGKILL to pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 20 || true
  rm -f "$(pid_file "$svc")"
  log "$svc crashed"
}

status_service() {
  local svc=$1 pid port
  port=$(port_of "$svc")
  if pid=$(our_pid "$svc"); then
    if port_open "$port"; then
      log "$svc: running (pid $pid, port $port answers)"
      return 0
    fi
    log "$svc: process alive (pid $pid) but port $port does not answer (starting or stuck; log: $(log_file "$svc"))"
    return 1
  fi
  if port_open "$port"; then
    log "$svc: not started by this script, but something else answers on port $port"
  else
    log "$svc: not running"
  fi
  return 1
}

# --- commands ---------------------------------------------------------------------------------

usage() {
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

cmd_up() {
  local svc
  pick_java # the readiness probes need it even when everything already runs
  for svc in "$@"; do start_service "$svc"; done
  for svc in "$@"; do wait_ready "$svc"; done
  for svc in "$@"; do log "$svc log: $(log_file "$svc")"; done
}

cmd_down() {
  local svc
  for svc in "$@"; do stop_service "$svc"; done
}

cmd_status() {
  local svc rc=0
  for svc in "$@"; do status_service "$svc" || rc=3; done
  return "$rc"
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  case $cmd in
    cql)
      [[ $# -ge 1 ]] || usage
      cql "$@"
      return
      ;;
    kafka-tool)
      [[ $# -ge 1 ]] || usage
      fetch kafka
      pick_java
      kafka_java "$HERE/log4j2-cli.properties" "$@"
      return
      ;;
  esac
  local svc services=("${ALL_SERVICES[@]}")
  if [[ $# -ge 1 ]]; then
    case $1 in
      kafka | cassandra | toxiproxy) services=("$1") ;;
      *) die "unknown service '$1' (kafka, cassandra or toxiproxy)" ;;
    esac
  fi
  case $cmd in
    up) cmd_up "${services[@]}" ;;
    down) cmd_down "${services[@]}" ;;
    restart)
      cmd_down "${services[@]}"
      cmd_up "${services[@]}"
      ;;
    status) cmd_status "${services[@]}" ;;
    crash) for svc in "${services[@]}"; do crash_service "$svc"; done ;;
    *) usage ;;
  esac
}

main "$@"
