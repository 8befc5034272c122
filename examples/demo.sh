#!/bin/sh
# examples/demo.sh BUILD_DIR: what `make demo` runs once everything is built.
#
# Starts a private ctxleakd on a socket and database under ./demo/, runs
# each example worker once with the storage it would use (the auth pool
# with its own thread-local observed, buggy and fixed; the coroutine
# scheduler with its own slot, naive and fixed; the others under the
# library's thread-local), stops the daemon with SIGTERM so that
# everything it received is committed, then prints the report: `ctxleak
# summary`, and a table of each run's findings beside what the thread,
# global and task backends would have found in that same run (the
# daemon's what-if) with the backends that keep its requests apart.  One
# finding is shown as an HTML picture.  The database stays behind to be
# explored.
#
# Nothing is installed and nothing is left running: a trap stops the daemon
# and any worker on exit, Ctrl-C or SIGTERM.
#
# DEMO_REQUESTS sets the number of requests per run (default 3000),
# DEMO_DIR the directory of the database and log (default ./demo).
set -eu

build=${1:-build}
requests=${DEMO_REQUESTS:-3000}
dir=${DEMO_DIR:-demo}
db=$dir/ctxleak.db
log=$dir/ctxleakd.log
ctxleak="$build/ctxleak --db $db"

# What the demo runs, each example once, with the storage it would use:
# example, backend and the example's extra arguments.  The auth pool and
# the coroutine scheduler keep storage of their own (the pool's
# thread-local observed, the scheduler's custom slot), buggy and fixed;
# the other workers have none and run under the library's thread-local,
# what a service written for threads would pick.  The daemon's what-if
# says, from each one run, what thread, global and task would have found.
# Each run reports as application example/backend (-fixed with --fixed).
RUNS="auth_pool observe
auth_pool observe --fixed
thread_per_request thread
thread_pool thread
event_loop thread
coroutines custom
coroutines custom --fixed"

daemon=
worker=
sockdir=

stop() { # pid: SIGTERM, then wait for it; quiet when it is already gone
	kill -TERM "$1" 2>/dev/null || :
	wait "$1" 2>/dev/null || :
}

cleanup() {
	status=$?
	trap - EXIT INT TERM
	[ -n "$worker" ] && stop "$worker"
	[ -n "$daemon" ] && stop "$daemon"
	[ -n "$sockdir" ] && rm -rf "$sockdir"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A Unix socket path must fit in sun_path (108 bytes): a clone deep in the
# file system gets its socket in a private temporary directory instead.
choose_socket() {
	sock=$(cd "$dir" && pwd)/ctxleak.sock
	if [ ${#sock} -gt 100 ]; then
		sockdir=$(mktemp -d "${TMPDIR:-/tmp}/ctxleak-demo.XXXXXX")
		sock=$sockdir/ctxleak.sock
	fi
}

start_daemon() {
	"$build/ctxleakd" --socket "$sock" --db "$db" --log-level warn \
		2>"$log" &
	daemon=$!
	tries=0
	until [ -S "$sock" ]; do
		if ! kill -0 "$daemon" 2>/dev/null || [ $tries -ge 100 ]; then
			echo "demo: ctxleakd did not start; its log:" >&2
			cat "$log" >&2
			exit 1
		fi
		sleep 0.1
		tries=$((tries + 1))
	done
}

stop_daemon() {
	kill -TERM "$daemon"
	if ! wait "$daemon"; then
		daemon=
		echo "demo: ctxleakd did not stop cleanly; its log:" >&2
		cat "$log" >&2
		exit 1
	fi
	daemon=
}

# app example backend [args]: one worker, in the background so that a
# Ctrl-C reaches the trap at once.
run_worker() {
	app=$1 example=$2 backend=$3
	shift 3
	CTXLEAK_SOCKET=$sock CTXLEAK_BACKEND=$backend CTXLEAK_APP=$app \
		"$build/examples/$example" "$@" "$requests" &
	worker=$!
	if ! wait "$worker"; then
		worker=
		echo "demo: $example failed under $backend" >&2
		exit 1
	fi
	worker=
}

app_name() { # example backend [args]
	case "$*" in
	*--fixed*) echo "$1/$2-fixed" ;;
	*) echo "$1/$2" ;;
	esac
}

# Not a pipe: the loop must run in this shell, where the trap sees $worker.
run_all() {
	while read -r example backend args; do
		# shellcheck disable=SC2086 # args is zero or more words
		run_worker "$(app_name $example $backend $args)" \
			"$example" "$backend" $args
	done <<RUNS
$RUNS
RUNS
}

# The closing table, from `ctxleak summary --json`: one row per run, in
# the order they ran.
report_table() {
	$ctxleak summary --json | awk "$TABLE_AWK"
}

# One bleed of the event loop, told in the daemon's words: the request to
# show the user first.
example_finding() {
	line=$($ctxleak leaks --app event_loop/thread --class bleed --limit 1 \
		--json)
	victim=$(echo "$line" | sed -n 's/.*"victim_request":\([0-9]*\).*/\1/p')
	detail=$(echo "$line" | sed -n 's/.*"detail":"\(.*\)"}$/\1/p')
	if [ -z "$victim" ]; then
		victim=1
		return
	fi
	echo
	echo "For instance, in event_loop under thread:"
	echo "$detail." | fold -s -w 74 | sed 's/ *$//; s/^/    /'
	echo
	$ctxleak show "#$victim" --html "$dir/leak.html"
	echo "Open $dir/leak.html in a browser: that request's threads, scopes"
	echo "and findings, as a picture."
}

# Reads the one line of `summary --json` and prints, per process, the
# total findings of the storage it ran with ("observed") and of each
# backend's what-if, and the backends recommended (those with none).
# shellcheck disable=SC2016 # awk's $ are awk's
TABLE_AWK='
# The string member name of a JSON object text; "" when absent.
function str(obj, name) {
	if (!match(obj, "\"" name "\":\"[^\"]*\""))
		return ""
	return substr(obj, RSTART + length(name) + 4, RLENGTH - length(name) - 5)
}
# The sum of the counts of the object member name (one class each); "?"
# when it is absent or null (the daemon ran with --no-what-if).
function total(obj, name,    m, n, i, v, sum) {
	if (!match(obj, "\"" name "\":\\{[^}]*\\}"))
		return "?"
	m = substr(obj, RSTART + length(name) + 4, RLENGTH - length(name) - 5)
	n = split(m, v, ",")
	for (i = 1; i <= n; i++) {
		sub(/^"[a-z]+":/, "", v[i])
		sum += v[i]
	}
	return sum
}
{
	procs = $0
	sub(/.*"processes":\[/, "", procs)
	incomplete = procs
	sub(/\],"incomplete":.*/, "", procs)
	sub(/.*\],"incomplete":/, "", incomplete)
	n = split(procs, p, /\{"pid":/)
	printf "%-26s %6s %8s %8s %8s  %s\n", "run (example/storage)", "ran", \
		"thread", "global", "task", "clean under"
	for (i = 2; i <= n; i++) {
		app = str(p[i], "app")
		what_if = p[i]
		sub(/.*"what_if":/, "", what_if)
		rec = p[i]
		if (match(rec, /"recommend":\[[^]]*\]/)) {
			rec = substr(rec, RSTART + 13, RLENGTH - 14)
			gsub("\"", "", rec)
			gsub(",", ", ", rec)
		}
		printf "%-26s %6s %8s %8s %8s  %s%s\n", app, \
			total(p[i], "observed"), total(what_if, "thread"), \
			total(what_if, "global"), total(what_if, "task"), \
			rec == "" ? "none" : rec, \
			index(incomplete, "\"app\":\"" app "\"") ? \
			" (records dropped)" : ""
	}
}'

mkdir -p "$dir"
# Two demos in one tree would share the socket and delete each other's
# database: the second waits for none and says why.
exec 9>"$dir/.lock"
if ! flock -n 9; then
	echo "demo: another demo is running in this tree ($dir/.lock)" >&2
	exit 1
fi
rm -f "$db" "$db-wal" "$db-shm" "$log"
choose_socket
start_daemon
echo "demo: ctxleakd on $sock, database $db; $requests requests per run"
run_all
stop_daemon

echo
$ctxleak summary
cat <<EOF

Each example ran once, with the storage it would use.  ran: the findings
of that storage; thread, global, task: what the library's backends would
have found in that same run (the daemon's what-if; by class in the summary
above); clean under: the backends with none, the storage to use.

EOF
report_table
example_finding
cat <<EOF

The database stays in $db (the daemon's log in $log).
Explore it:
    $build/ctxleak --db $db leaks --app event_loop/thread --limit 10
    $build/ctxleak --db $db show '#$victim'
    sqlite3 $db 'select class, count(*) from leaks group by 1'
    sqlite3 $db 'select name, sum(requests) from request_stats group by 1'
EOF
