/*
 * cli_hosts.c: `ctxleak hosts`, the hosts of a fleet's central database
 * (docs/CENTRAL.md): when each last forwarded, how many databases
 * (sources), processes and findings it sent, its findings by class, and
 * how many windows in it no count is complete over (drop windows, daemons
 * that died, processes that vanished: what `summary` lists as
 * incomplete).  A host's own database has no hosts table: there the
 * command says so and exits 2.
 */
#include <string.h>

#include "cli.h"

enum {
	H_NAME,
	H_MACHINE,
	H_LAST_SEEN,
	H_SOURCES,
	H_PROCESSES,
	H_FINDINGS,
	H_INCOMPLETE,
	H_CLASS0, /* then one per class, in cli_class_names order */
};

/* Findings by class per host, in cli_class_names order, as f.bleed ... */
#define CLASS_SUM(cls)                                                         \
	", sum(CASE WHEN l.class = '" cls "' THEN 1 ELSE 0 END) AS " cls
#define CLASS_SUMS                                                             \
	CLASS_SUM("bleed")                                                     \
	CLASS_SUM("stale")                                                     \
	CLASS_SUM("overlap")                                                   \
	CLASS_SUM("lost") CLASS_SUM("misnest") CLASS_SUM("unclosed")
#define FINDINGS_BY_HOST                                                       \
	"SELECT p.host_id, count(*) AS n" CLASS_SUMS " FROM leaks l JOIN"      \
	" processes p ON p.id = l.process_id GROUP BY p.host_id"

/* Findings counted once per host (one scan of leaks), the rest per host by
 * index (processes.host_id). */
static const char hosts_sql[] =
    "SELECT h.name, h.machine_id, h.last_seen,"
    " (SELECT count(*) FROM sources so WHERE so.host_id = h.id),"
    " (SELECT count(*) FROM processes p WHERE p.host_id = h.id),"
    " coalesce(f.n, 0),"
    " (SELECT count(*) FROM drops d JOIN processes p ON p.id = d.process_id"
    " WHERE p.host_id = h.id) + (SELECT count(*) FROM runs r JOIN sources so"
    " ON so.id = r.source_id WHERE so.host_id = h.id AND r.unclean = 1) +"
    " (SELECT count(*) FROM processes p WHERE p.host_id = h.id AND"
    " p.vanished = 1),"
    " coalesce(f.bleed, 0), coalesce(f.stale, 0), coalesce(f.overlap, 0),"
    " coalesce(f.lost, 0), coalesce(f.misnest, 0), coalesce(f.unclosed, 0)"
    " FROM hosts h LEFT JOIN (" FINDINGS_BY_HOST ") f ON f.host_id = h.id"
    " WHERE :host IS NULL OR h.name = ANY(string_to_array(:host, ','))"
    " ORDER BY h.name COLLATE BINARY";

static void host_json(struct cli_json *j, struct cli_stmt *st)
{
	cli_json_object(j);
	cli_json_kcol(j, "host", st, H_NAME);
	cli_json_kcol(j, "machine_id", st, H_MACHINE);
	cli_json_kts(j, "last_seen", cli_stmt_int(st, H_LAST_SEEN));
	cli_json_kcol(j, "sources", st, H_SOURCES);
	cli_json_kcol(j, "processes", st, H_PROCESSES);
	cli_json_kcol(j, "findings", st, H_FINDINGS);
	cli_json_key(j, "classes");
	cli_json_object(j);
	for (int i = 0; i < CLI_CLASS_COUNT; i++)
		cli_json_kint(j, cli_class_names[i],
			      cli_stmt_int(st, H_CLASS0 + i));
	cli_json_end(j);
	cli_json_kcol(j, "incomplete", st, H_INCOMPLETE);
	cli_json_end(j);
}

static const struct cli_col host_cols[] = {
    {"HOST", 0},
    {"MACHINE ID", CLI_COL_SHRINK},
    {"LAST SEEN", 0},
    {"SOURCES", CLI_COL_RIGHT},
    {"PROCS", CLI_COL_RIGHT},
    {"FINDINGS", CLI_COL_RIGHT},
    {"CLASSES", CLI_COL_SHRINK},
    {"INCOMPLETE", CLI_COL_RIGHT},
};

static void host_row(struct cli_table *t, struct cli_stmt *st)
{
	char classes[256] = "", when[32];
	size_t n = 0;

	cli_table_cell(t, cli_db_str(st, H_NAME));
	cli_table_cell(t, cli_db_str(st, H_MACHINE));
	cli_table_cell(t, cli_time_short(cli_stmt_int(st, H_LAST_SEEN), when,
					 sizeof(when)));
	cli_table_cell(t, cli_db_str(st, H_SOURCES));
	cli_table_cell(t, cli_db_str(st, H_PROCESSES));
	cli_table_cell(t, cli_db_str(st, H_FINDINGS));
	for (int i = 0; i < CLI_CLASS_COUNT; i++) {
		long long k = cli_stmt_int(st, H_CLASS0 + i);

		if (k && n < sizeof(classes))
			n += snprintf(classes + n, sizeof(classes) - n,
				      "%s%s %lld", n ? ", " : "",
				      cli_class_names[i], k);
	}
	cli_table_cell(t, classes);
	cli_table_cell(t, cli_db_str(st, H_INCOMPLETE));
}

int cli_hosts(struct cli *c)
{
	struct cli_table *t = NULL;
	struct cli_json *j = NULL;
	struct cli_stmt *st;
	int rc, n = 0;

	if (!cli_db_is_pg(c))
		return cli_error(CLI_EXIT_USAGE,
				 "%s is one host's database: hosts lists those "
				 "of a central one (--db postgresql://...)",
				 c->db_path);
	if ((st = cli_db_prepare(c, hosts_sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (c->json)
		j = cli_json_new(c->out);
	else
		t = cli_table_new(c, host_cols, 8);
	for (; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; n++) {
		if (j)
			host_json(j, st);
		else
			host_row(t, st);
	}
	cli_stmt_finalize(st);
	cli_json_free(j);
	if (n == 0)
		cli_db_say_where(c);
	if (t) {
		if (n)
			cli_table_print(t);
		else
			fprintf(c->out, "no hosts%s\n",
				c->filter.host ? " match --host" : "");
		cli_table_free(t);
	}
	return cli_db_done(c, rc);
}
