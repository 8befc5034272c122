#!/bin/sh
# examples/demo.sh BUILD_DIR: what `make demo` runs once everything is built.
#
# Starts a private ctxleakd on a socket and database under ./demo/, runs
# the auth pool with its own thread-local observed (buggy and fixed) and
# under the library's thread-local, every other example worker under the
# thread, global and task backends (and the coroutine example under its
# custom storage, naive and fixed), stops the daemon with SIGTERM so that
# everything it received is committed, then prints the report: `ctxleak
# summary`, a table of each example under each backend, and the backend
# recommended for each process.  The database stays behind to be explored.
#
# Nothing is installed and nothing is left running: a trap stops the daemon
# and any worker on exit, Ctrl-C or SIGTERM.
#
# DEMO_REQUESTS sets the number of requests per run (default 3000).
set -eu

build=${1:-build}
requests=${DEMO_REQUESTS:-3000}
dir=demo
db=$dir/ctxleak.db
log=$dir/ctxleakd.log
ctxleak="$build/ctxleak --db $db"

# What the demo runs: example, backend and the example's extra arguments.
# Each run reports as application example/backend (-fixed with --fixed).
RUNS="auth_pool observe
auth_pool observe --fixed
auth_pool thread
thread_per_request thread
thread_per_request global
thread_per_request task
thread_pool thread
thread_pool global
thread_pool task
event_loop thread
event_loop global
event_loop task
coroutines thread
coroutines global
coroutines task
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
	sock=$(pwd)/$dir/ctxleak.sock
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

# The findings of each run by class, from `ctxleak leaks --json`, and each
# process's model and recommended backend from `ctxleak processes --json`.
report_table() {
	{
		$ctxleak processes --json
		$ctxleak leaks --json --limit 0
	} | awk -v runs="$RUNS" "$TABLE_AWK"
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
	echo "$detail." | fold -s -w 74 | sed 's/^/    /'
	echo
	$ctxleak show "#$victim" --html "$dir/leak.html"
	echo "Open $dir/leak.html in a browser: that request's threads, scopes"
	echo "and findings, as a picture."
}

# Reads `processes --json` and `leaks --json` lines (told apart by the
# "class" field) and prints one row per run in the order they ran.
# shellcheck disable=SC2016 # awk's $ are awk's
TABLE_AWK='
function field(line, name,    m) {
	if (!match(line, "\"" name "\": *(\"[^\"]*\"|[-0-9.]+|null)"))
		return ""
	m = substr(line, RSTART, RLENGTH)
	sub("^\"" name "\": *", "", m)
	gsub("\"", "", m)
	return m == "null" ? "" : m
}
BEGIN {
	nclass = split("lost stale bleed overlap misnest unclosed", class, " ")
	nrun = split(runs, line, "\n")
	for (i = 1; i <= nrun; i++) {
		split(line[i], w, " ")
		app[i] = w[1] "/" w[2] (line[i] ~ /--fixed/ ? "-fixed" : "")
	}
}
field($0, "class") != "" { n[field($0, "app"), field($0, "class")]++; next }
{
	a = field($0, "app")
	rec[a] = field($0, "recommend")
	model[a] = field($0, "model")
	dropped[a] += field($0, "dropped")
}
END {
	printf "%-25s", "run"
	for (c = 1; c <= nclass; c++)
		printf "%" (length(class[c]) + 2) "s", class[c]
	printf "\n"
	for (i = 1; i <= nrun; i++) {
		total = 0
		printf "%-25s", app[i]
		for (c = 1; c <= nclass; c++) {
			k = n[app[i], class[c]]
			total += k
			printf "%" (length(class[c]) + 2) "s", k ? k : "-"
		}
		printf "  %s\n", total ? "LEAKS" : dropped[app[i]] ? \
			"incomplete" : "clean"
	}
	printf "\nBackend recommended for each process, from what it did:\n"
	for (i = 1; i <= nrun; i++)
		printf "  %-25s %-18s -> %s\n", app[i], model[app[i]], \
			rec[app[i]] == "" ? "?" : rec[app[i]]
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
echo
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
