/*
 * cli_html.c: `ctxleak show REQUEST --html FILE`, the request's timeline
 * as one self-contained HTML page: inline SVG, a little CSS and script,
 * nothing fetched, so that it can be mailed, attached to a ticket or
 * opened from a laptop's disk.
 *
 * The picture: a lane per thread of the request's process, time across.
 * In a lane, a row per request whose code ran there, each request a
 * colour: its scopes as bars (nested scopes inset), the spans between a
 * RESUME and its SUSPEND darker, TAG records as diamonds and EVENT records
 * as dots, outlined red when the backend attributed them to another
 * request.  Each finding is a red flag with its class, a link to its row
 * in the evidence table below (which gives the record, the detail and the
 * fix).  The victim and source requests are named and outlined in the
 * legend and their rows.
 *
 * Thousands of records stay readable because only what is involved is
 * drawn one by one: the request, the requests on the other side of its
 * findings, and those whose context it carried or that carried its own
 * (the set `show` lists as "other requests involved").  Every other
 * record of the process in the same time window is counted into a density
 * strip, under its lane, or as a thin lane of its own for a thread where
 * nothing involved ran.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define LABEL_W	    230	 /* px left of the time axis, for the labels */
#define PLOT_MIN_W  900	 /* px of time axis, at least... */
#define PLOT_MAX_W  6000 /* ...and at most, however many records */
#define PX_PER_REC  14	 /* px of axis per involved record, between */
#define AXIS_H	    34	 /* px of the time axis above the lanes */
#define LANE_HEAD_H 20	 /* px of a lane's title */
#define ROW_H	    24	 /* px of a request's row in a lane */
#define STRIP_H	    8	 /* px of a density strip of other records */
#define FOLDED_H    30	 /* px of the lane of a thread nothing involved ran */
#define BUCKETS	    120	 /* columns of a density strip */
#define FINE	    4096 /* time slices counted, then put in columns */
#define MAX_BREAKS  8	 /* idle stretches cut out of the time axis */
#define BREAK_PX    56	 /* px such a stretch is drawn as */

/* Request colours; red and orange stay for findings and roles. */
/* "s" after a count of anything but one. */
static const char *plural(long n)
{
	return n == 1 ? "" : "s";
}

static const char *const palette[] = {
    "#3b6fb6", "#2e9e5b", "#8c5fc0", "#9c6b3c", "#d45fa8",
    "#1aa3b8", "#a8a31f", "#6f6f6f", "#7fa6db", "#72c48a",
};
#define NCOLORS (sizeof(palette) / sizeof(palette[0]))

/* A request drawn one by one. */
struct hreq {
	int64_t id;    /* requests.id */
	char *name;    /* NULL: unnamed, or no row (not retired) */
	int64_t begin; /* ns; 0 when it has no row */
	int victim;    /* findings of the shown request's with it as victim */
	int source;    /* ...and as source */
	const char *color; /* its colour, from the palette */
};

/* A record of an involved request. */
struct hrec {
	int64_t id, ts, tid, ctx;  /* the records row's */
	int64_t req;		   /* request in truth; 0: none */
	int64_t said;		   /* request the backend said; 0: none */
	char *type, *name, *value; /* the records row's */
	int64_t end_ts; /* BEGIN: its END's ts, or 0 when none kept */
	int depth;	/* BEGIN: scopes of its request open around it */
};

/* A finding of the shown request. */
struct hfind {
	/* The leaks row's, victim and source its request ids (0: none). */
	int64_t id, ts, tid, victim, source, process;
	char *cls, *victim_name, *source_name, *record, *name, *value;
	char *detail, *site; /* site: "file:line" */
};

/* A thread's lane. */
struct hlane {
	int64_t tid;   /* the thread */
	int expanded;  /* involved records ran on it */
	int64_t *rows; /* request ids, one row each (0: no request) */
	int nrows;
	long others;	   /* records of requests not involved */
	long other_reqs;   /* how many such requests */
	int hist[BUCKETS]; /* others over time */
	int y, h;	   /* where it is drawn */
};

/* Everything one page shows, loaded before a byte is written. */
struct page {
	struct cli *c;
	FILE *out;	   /* the --html file */
	int64_t id;	   /* the shown request */
	int64_t process;   /* its process (processes.id) */
	struct hreq *reqs; /* the involved requests, the shown one first */
	int nreqs;
	struct hrec *recs; /* their records, by time */
	int nrecs;
	struct hfind *finds; /* the shown request's findings, by time */
	int nfinds;
	struct hlane *lanes; /* the threads */
	int nlanes;
	int64_t t0, t1; /* the window drawn */
	int plot_w;	/* px of the time axis */
	/* Stretches with nothing involved in them that would take a tenth
	 * of the axis or more (clean requests of other threads running in
	 * the middle of it): drawn BREAK_PX wide, so that the interleaving
	 * around them is not squeezed into a few pixels. */
	struct {
		int64_t from, to;
	} breaks[MAX_BREAKS];
	int nbreaks;
	double scale; /* px per ns outside the breaks */
};

/* ------------------------------------------------------------ writing */

/* Client bytes as HTML text or attribute value: invalid UTF-8 as U+FFFD,
 * control characters as '?', and the five markup characters escaped. */
static void html_n(FILE *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;
	uint32_t cp;

	while (i < len) {
		n = cli_utf8_next(p + i, len - i, &cp);
		if (n == 0) {
			fputs("\xef\xbf\xbd", out);
			i++;
			continue;
		}
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
			fputc('?', out);
		else if (cp == '&')
			fputs("&amp;", out);
		else if (cp == '<')
			fputs("&lt;", out);
		else if (cp == '>')
			fputs("&gt;", out);
		else if (cp == '"')
			fputs("&quot;", out);
		else if (cp == '\'')
			fputs("&#39;", out);
		else
			fwrite(p + i, 1, n, out);
		i += n;
	}
}

static void html(FILE *out, const char *s)
{
	if (s)
		html_n(out, s, strlen(s));
}

static char *dup_col(struct cli_stmt *st, int col)
{
	const char *s = cli_db_str(st, col);
	char *d = s ? strdup(s) : NULL;

	if (s && d == NULL)
		abort();
	return d;
}

/* Room for element n of an array of n: 16 at first, then doubling, so
 * that from 16 on a power of two is a full array. */
static void *grow(void *p, int n, size_t size)
{
	if (n == 0 || (n >= 16 && (n & (n - 1)) == 0)) {
		p = realloc(p, (size_t)(n ? 2 * n : 16) * size);
		if (p == NULL)
			abort();
	}
	return p;
}

/* "#12 GET /a", escaped. */
static void html_req(FILE *out, int64_t id, const char *name)
{
	if (id == 0) {
		fputs("no request", out);
		return;
	}
	fprintf(out, "#%" PRId64, id);
	if (name) {
		fputc(' ', out);
		html(out, name);
	}
}

/* An offset from the shown request's first record: "+1.25ms". */
static void html_at(struct page *pg, int64_t ts)
{
	char buf[32];

	if (ts < pg->t0)
		fprintf(pg->out, "-%s",
			cli_time_duration(pg->t0 - ts, buf, sizeof(buf)));
	else
		fprintf(pg->out, "+%s",
			cli_time_duration(ts - pg->t0, buf, sizeof(buf)));
}

/* ------------------------------------------------------------ loading */

static struct hreq *find_req(struct page *pg, int64_t id)
{
	for (int i = 0; i < pg->nreqs; i++)
		if (pg->reqs[i].id == id)
			return &pg->reqs[i];
	return NULL;
}

static const char *req_name(struct page *pg, int64_t id)
{
	struct hreq *q = find_req(pg, id);

	return q ? q->name : NULL;
}

/* The involved requests, without the NULLs of findings without a
 * source: the shown one first, then by when they began. */
#define INVOLVED_CTE                                                           \
	"WITH raw(id) AS (" CLI_INVOLVED_SQL "),"                              \
	" inv(id) AS (SELECT id FROM raw WHERE id IS NOT NULL) "

static const char reqs_sql[] =
    INVOLVED_CTE "SELECT inv.id, r.name, r.begin_ts FROM inv"
		 " LEFT JOIN requests r ON r.id = inv.id"
		 " ORDER BY inv.id <> ?1, r.begin_ts, inv.id";

/* The records drawn one by one: those of the involved requests, and
 * work of no request done under the shown one's context.  (Written as
 * the partial index records_ctx_request is, so that SQLite uses it.) */
#define DRAWN                                                                  \
	"(d.request_id IN (SELECT id FROM inv) OR (d.ctx_request_id = ?1"      \
	" AND d.ctx_request_id IS NOT d.request_id))"

static const char recs_sql[] = INVOLVED_CTE
    "SELECT d.id, d.ts, d.tid, d.ctx, d.request_id, d.ctx_request_id,"
    " d.type, d.name, d.value, d.process_id"
    " FROM records d WHERE " DRAWN " ORDER BY d.ts, d.id";

static const char finds_sql[] =
    "SELECT l.id, l.ts, l.tid, l.victim_request_id, l.source_request_id,"
    " l.process_id, l.class, l.victim_name, l.source_name,"
    " l.record, l.name, l.value, l.detail, s.file || ':' || s.line"
    " FROM leaks l LEFT JOIN sites s ON s.id = l.site_id"
    " WHERE l.victim_request_id = ?1 OR l.source_request_id = ?1"
    " ORDER BY l.ts, l.id";

/* Every other record of the process in the window, by thread and time
 * column: what the picture counts instead of drawing. */
static const char others_sql[] = INVOLVED_CTE
    "SELECT d.tid, min(?5 - 1, (d.ts - ?3) * ?5 / (?4 - ?3 + 1)), count(*)"
    " FROM records d WHERE d.process_id = ?2 AND d.ts BETWEEN ?3 AND ?4"
    " AND NOT coalesce(" DRAWN ", 0) GROUP BY 1, 2";

static const char other_reqs_sql[] =
    INVOLVED_CTE "SELECT d.tid, count(DISTINCT d.request_id) FROM records d"
		 " WHERE d.process_id = ?2 AND d.ts BETWEEN ?3 AND ?4"
		 " AND NOT coalesce(" DRAWN ", 0) GROUP BY 1";

static struct cli_stmt *query(struct page *pg, const char *sql)
{
	struct cli_stmt *st = cli_db_prepare(pg->c, sql);

	if (st == NULL)
		return NULL;
	/* ?1 the request; the window queries also ?2 its process, ?3 and
	 * ?4 the window, ?5 the columns of a strip. */
	cli_stmt_bind_int(st, 1, pg->id);
	if (cli_stmt_nparams(st) >= 4) {
		cli_stmt_bind_int(st, 2, pg->process);
		cli_stmt_bind_int(st, 3, pg->t0);
		cli_stmt_bind_int(st, 4, pg->t1);
		cli_stmt_bind_int(st, 5, FINE);
	}
	return st;
}

static int load_reqs(struct page *pg)
{
	struct cli_stmt *st = query(pg, reqs_sql);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		struct hreq *q;

		pg->reqs = grow(pg->reqs, pg->nreqs, sizeof(*pg->reqs));
		q = &pg->reqs[pg->nreqs];
		memset(q, 0, sizeof(*q));
		q->id = cli_stmt_int(st, 0);
		q->name = dup_col(st, 1);
		q->begin = cli_stmt_int(st, 2);
		q->color = palette[pg->nreqs++ % NCOLORS];
	}
	cli_stmt_finalize(st);
	return cli_db_done(pg->c, rc);
}

static int load_finds(struct page *pg)
{
	struct cli_stmt *st = query(pg, finds_sql);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		struct hfind *f;
		struct hreq *q;

		pg->finds = grow(pg->finds, pg->nfinds, sizeof(*pg->finds));
		f = &pg->finds[pg->nfinds++];
		f->id = cli_stmt_int(st, 0);
		f->ts = cli_stmt_int(st, 1);
		f->tid = cli_stmt_int(st, 2);
		f->victim = cli_stmt_int(st, 3);
		f->source = cli_stmt_int(st, 4);
		f->process = cli_stmt_int(st, 5);
		f->cls = dup_col(st, 6);
		f->victim_name = dup_col(st, 7);
		f->source_name = dup_col(st, 8);
		f->record = dup_col(st, 9);
		f->name = dup_col(st, 10);
		f->value = dup_col(st, 11);
		f->detail = dup_col(st, 12);
		f->site = dup_col(st, 13);
		if ((q = find_req(pg, f->victim)))
			q->victim++;
		if ((q = find_req(pg, f->source)))
			q->source++;
		pg->process = f->process;
	}
	cli_stmt_finalize(st);
	return cli_db_done(pg->c, rc);
}

static int load_recs(struct page *pg)
{
	struct cli_stmt *st = query(pg, recs_sql);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		struct hrec *d;

		pg->recs = grow(pg->recs, pg->nrecs, sizeof(*pg->recs));
		d = &pg->recs[pg->nrecs++];
		memset(d, 0, sizeof(*d));
		d->id = cli_stmt_int(st, 0);
		d->ts = cli_stmt_int(st, 1);
		d->tid = cli_stmt_int(st, 2);
		d->ctx = cli_stmt_int(st, 3);
		d->req = cli_stmt_int(st, 4);
		d->said = cli_stmt_int(st, 5);
		d->type = dup_col(st, 6);
		d->name = dup_col(st, 7);
		d->value = dup_col(st, 8);
		pg->process = cli_stmt_int(st, 9);
	}
	cli_stmt_finalize(st);
	return cli_db_done(pg->c, rc);
}

static int is(const struct hrec *d, const char *type)
{
	return d->type && strcmp(d->type, type) == 0;
}

/* Each BEGIN's END (the first END of its ctx in its request after it),
 * and how deep it is nested among its request's scopes. */
static void pair_scopes(struct page *pg)
{
	/* The scopes still open, as indexes of their BEGINs: few at a time,
	 * so that nesting costs no scan of every earlier record. */
	int *open = malloc(((size_t)pg->nrecs + 1) * sizeof(*open)), nopen = 0;

	if (open == NULL)
		abort();
	for (int i = 0; i < pg->nrecs; i++) {
		struct hrec *b = &pg->recs[i];
		int kept = 0;

		if (!is(b, "BEGIN"))
			continue;
		for (int k = i + 1; k < pg->nrecs; k++) {
			struct hrec *e = &pg->recs[k];

			if (is(e, "END") && e->ctx == b->ctx &&
			    e->req == b->req) {
				b->end_ts = e->ts;
				break;
			}
		}
		for (int k = 0; k < nopen; k++) {
			struct hrec *o = &pg->recs[open[k]];

			if (o->end_ts && o->end_ts <= b->ts)
				continue; /* ended: dropped */
			open[kept++] = open[k];
			b->depth += o->req == b->req && o->tid == b->tid;
		}
		nopen = kept;
		open[nopen++] = i;
	}
	free(open);
}

static struct hlane *find_lane(struct page *pg, int64_t tid)
{
	for (int i = 0; i < pg->nlanes; i++)
		if (pg->lanes[i].tid == tid)
			return &pg->lanes[i];
	return NULL;
}

static struct hlane *add_lane(struct page *pg, int64_t tid, int expanded)
{
	struct hlane *l = find_lane(pg, tid);

	if (l)
		return l;
	pg->lanes = grow(pg->lanes, pg->nlanes, sizeof(*pg->lanes));
	l = &pg->lanes[pg->nlanes++];
	memset(l, 0, sizeof(*l));
	l->tid = tid;
	l->expanded = expanded;
	return l;
}

static int row_of(const struct hlane *l, int64_t req)
{
	for (int i = 0; i < l->nrows; i++)
		if (l->rows[i] == req)
			return i;
	return -1;
}

/* A lane per thread that ran involved records, a row in it per request
 * whose code ran there, in the order of the legend. */
static void build_lanes(struct page *pg)
{
	for (int i = 0; i < pg->nrecs; i++) {
		struct hlane *l = add_lane(pg, pg->recs[i].tid, 1);

		if (row_of(l, pg->recs[i].req) < 0) {
			l->rows = grow(l->rows, l->nrows, sizeof(*l->rows));
			l->rows[l->nrows++] = pg->recs[i].req;
		}
	}
	for (int i = 0; i < pg->nlanes; i++) {
		struct hlane *l = &pg->lanes[i];

		/* Insertion sort by legend position (few rows). */
		for (int a = 1; a < l->nrows; a++)
			for (int b = a; b > 0; b--) {
				struct hreq *x = find_req(pg, l->rows[b - 1]);
				struct hreq *y = find_req(pg, l->rows[b]);
				int64_t t;

				if (!y || (x && x - pg->reqs < y - pg->reqs))
					break;
				t = l->rows[b];
				l->rows[b] = l->rows[b - 1];
				l->rows[b - 1] = t;
			}
	}
}

/* Where ts is on the axis: linear but for the breaks. */
static double x_of(const struct page *pg, int64_t ts)
{
	double x = LABEL_W;
	int64_t at = pg->t0;

	if (ts < pg->t0)
		ts = pg->t0;
	if (ts > pg->t1)
		ts = pg->t1;
	for (int i = 0; i < pg->nbreaks; i++) {
		if (ts <= pg->breaks[i].from)
			break;
		x += (double)(pg->breaks[i].from - at) * pg->scale;
		if (ts < pg->breaks[i].to)
			return x + BREAK_PX *
				       (double)(ts - pg->breaks[i].from) /
				       (double)(pg->breaks[i].to -
						pg->breaks[i].from);
		x += BREAK_PX;
		at = pg->breaks[i].to;
	}
	return x + (double)(ts - at) * pg->scale;
}

static int cmp_ts(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The widest idle stretches between the times drawn, those over a tenth
 * of the window, become breaks (in time order); then the scale. */
static void find_breaks(struct page *pg)
{
	int n = pg->nrecs + pg->nfinds;
	int64_t *t = malloc(((size_t)n + 1) * sizeof(*t)), cut = 0;

	if (t == NULL)
		abort();
	for (int i = 0; i < pg->nrecs; i++)
		t[i] = pg->recs[i].ts;
	for (int i = 0; i < pg->nfinds; i++)
		t[pg->nrecs + i] = pg->finds[i].ts;
	qsort(t, (size_t)n, sizeof(*t), cmp_ts);
	for (int i = 0; i + 1 < n && pg->nbreaks < MAX_BREAKS; i++)
		if ((t[i + 1] - t[i]) * 10 > pg->t1 - pg->t0) {
			pg->breaks[pg->nbreaks].from = t[i];
			pg->breaks[pg->nbreaks++].to = t[i + 1];
			cut += t[i + 1] - t[i];
		}
	free(t);
	pg->scale =
	    (double)(pg->plot_w - pg->nbreaks * BREAK_PX) /
	    (double)(pg->t1 - pg->t0 - cut > 0 ? pg->t1 - pg->t0 - cut : 1);
}

static int load_others(struct page *pg)
{
	struct cli_stmt *st = query(pg, others_sql);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		struct hlane *l = add_lane(pg, cli_stmt_int(st, 0), 0);
		int64_t slice = cli_stmt_int(st, 1);
		int n = (int)cli_stmt_int(st, 2);
		/* The slice's middle, placed as the axis places it. */
		double x =
		    x_of(pg, pg->t0 + (int64_t)((slice + 0.5) *
						(pg->t1 - pg->t0) / FINE));
		int b = (int)((x - LABEL_W) * BUCKETS / pg->plot_w);

		l->hist[b < 0 ? 0 : b >= BUCKETS ? BUCKETS - 1 : b] += n;
		l->others += n;
	}
	cli_stmt_finalize(st);
	if ((rc = cli_db_done(pg->c, rc)))
		return rc;
	st = query(pg, other_reqs_sql);
	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		struct hlane *l = find_lane(pg, cli_stmt_int(st, 0));

		if (l)
			l->other_reqs = cli_stmt_int(st, 1);
	}
	cli_stmt_finalize(st);
	return cli_db_done(pg->c, rc);
}

/* The window: every involved record and finding. */
static void window(struct page *pg)
{
	pg->t0 = pg->t1 = 0;
	for (int i = 0; i < pg->nrecs; i++) {
		if (pg->t0 == 0 || pg->recs[i].ts < pg->t0)
			pg->t0 = pg->recs[i].ts;
		if (pg->recs[i].ts > pg->t1)
			pg->t1 = pg->recs[i].ts;
	}
	for (int i = 0; i < pg->nfinds; i++) {
		if (pg->t0 == 0 || pg->finds[i].ts < pg->t0)
			pg->t0 = pg->finds[i].ts;
		if (pg->finds[i].ts > pg->t1)
			pg->t1 = pg->finds[i].ts;
	}
	pg->plot_w = pg->nrecs * PX_PER_REC;
	if (pg->plot_w < PLOT_MIN_W)
		pg->plot_w = PLOT_MIN_W;
	if (pg->plot_w > PLOT_MAX_W)
		pg->plot_w = PLOT_MAX_W;
	find_breaks(pg);
}

/* ------------------------------------------------------------ drawing */

static const char *color_of(struct page *pg, int64_t req)
{
	struct hreq *q = find_req(pg, req);

	return q ? q->color : "#bbbbbb";
}

/* Ticks about every 150 px on [from, to], a stretch without breaks: the
 * first at its time since the window began, the next ones since that
 * first ("...+1.1us"), which after a long break says more. */
static void ticks(struct page *pg, int64_t from, int64_t to)
{
	int n = (int)((x_of(pg, to) - x_of(pg, from)) / 150);
	char d[32];

	for (int i = 0; i <= n; i++) {
		int64_t ts = from + (to - from) * i / (n ? n : 1);
		double x = x_of(pg, ts);

		fprintf(pg->out,
			"<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"100%%\"/>"
			"<text x=\"%.1f\" y=\"%d\">",
			x, AXIS_H - 6, x, x + 2, AXIS_H - 10);
		if (i == 0 || from == pg->t0)
			html_at(pg, ts);
		else
			fprintf(pg->out, "\xe2\x80\xa6+%s",
				cli_time_duration(ts - from, d, sizeof(d)));
		fputs("</text>\n", pg->out);
		if (n == 0)
			break;
	}
}

static void axis(struct page *pg)
{
	FILE *out = pg->out;
	int64_t at = pg->t0;
	char d[32];

	fprintf(out, "<g class=\"axis\">\n");
	for (int i = 0; i < pg->nbreaks; i++) {
		double x = x_of(pg, pg->breaks[i].from);

		ticks(pg, at, pg->breaks[i].from);
		fprintf(out,
			"<rect class=\"gap\" x=\"%.1f\" y=\"%d\" "
			"width=\"%d\" height=\"100%%\"/>"
			"<text class=\"gap\" x=\"%.1f\" y=\"%d\">"
			"\xe2\x8b\xaf %s \xe2\x8b\xaf</text>\n",
			x + 4, AXIS_H - 4, BREAK_PX - 8, x + 4, AXIS_H + 6,
			cli_time_duration(pg->breaks[i].to - pg->breaks[i].from,
					  d, sizeof(d)));
		at = pg->breaks[i].to;
	}
	ticks(pg, at, pg->t1);
	fputs("</g>\n", out);
}

/* Other records as a strip of grey columns, darker where denser. */
static void strip(struct page *pg, const struct hlane *l, int y)
{
	FILE *out = pg->out;
	int max = 1;

	for (int b = 0; b < BUCKETS; b++)
		max = l->hist[b] > max ? l->hist[b] : max;
	fprintf(out,
		"<g class=\"others\"><title>%ld records of %ld requests "
		"not involved</title>",
		l->others, l->other_reqs);
	for (int b = 0; b < BUCKETS; b++) {
		if (l->hist[b] == 0)
			continue;
		fprintf(out,
			"<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" "
			"height=\"%d\" fill-opacity=\"%.2f\"/>",
			LABEL_W + (double)b * pg->plot_w / BUCKETS, y,
			(double)pg->plot_w / BUCKETS, STRIP_H,
			0.15 + 0.85 * l->hist[b] / max);
	}
	fputs("</g>\n", out);
}

static void record_title(struct page *pg, const struct hrec *d)
{
	FILE *out = pg->out;

	fputs("<title>", out);
	html(out, d->type);
	if (d->name) {
		fputc(' ', out);
		html(out, d->name);
	}
	if (d->value) {
		fputs(is(d, "TAG") ? "=" : ": ", out);
		html(out, d->value);
	}
	fputs(" of ", out);
	html_req(out, d->req, req_name(pg, d->req));
	if (d->said != d->req) {
		fputs(", recorded under ", out);
		html_req(out, d->said, req_name(pg, d->said));
	}
	fputs(" at ", out);
	html_at(pg, d->ts);
	fputs("</title>", out);
}

static void scope_bar(struct page *pg, const struct hrec *d, int y)
{
	double x0 = x_of(pg, d->ts);
	double x1 = x_of(pg, d->end_ts ? d->end_ts : pg->t1);
	int inset = d->depth * 3 < 8 ? d->depth * 3 : 8;

	fprintf(pg->out,
		"<rect class=\"scope%s\" data-req=\"%" PRId64 "\" x=\"%.1f\" "
		"y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\">",
		d->end_ts ? "" : " open", d->req, x0, y + 3 + inset,
		x1 - x0 > 1 ? x1 - x0 : 1, ROW_H - 6 - 2 * inset,
		color_of(pg, d->req));
	fputs("<title>scope ", pg->out);
	html(pg->out, d->name ? d->name : "(unnamed)");
	fputs(" of ", pg->out);
	html_req(pg->out, d->req, req_name(pg, d->req));
	fputs(d->end_ts ? "" : ", never ended", pg->out);
	fputs("</title></rect>\n", pg->out);
}

/* A RESUME to the next SUSPEND on its thread: the request's code ran. */
static void run_span(struct page *pg, int i, int y)
{
	const struct hrec *d = &pg->recs[i];
	int64_t end = pg->t1;

	for (int k = i + 1; k < pg->nrecs; k++)
		if (pg->recs[k].tid == d->tid && is(&pg->recs[k], "SUSPEND")) {
			end = pg->recs[k].ts;
			break;
		}
	fprintf(pg->out,
		"<rect class=\"run\" data-req=\"%" PRId64 "\" x=\"%.1f\" "
		"y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
		d->req, x_of(pg, d->ts), y + ROW_H - 7,
		x_of(pg, end) - x_of(pg, d->ts) > 1
		    ? x_of(pg, end) - x_of(pg, d->ts)
		    : 1,
		4, color_of(pg, d->req));
}

static void mark(struct page *pg, const struct hrec *d, int y)
{
	double x = x_of(pg, d->ts);
	int cy = y + ROW_H / 2;
	int wrong = d->said != d->req;

	fprintf(pg->out,
		"<g class=\"mark %s%s\" id=\"r%" PRId64 "\" data-req=\"%" PRId64
		"\" fill=\"%s\">",
		is(d, "TAG") ? "tag" : "event", wrong ? " wrong" : "", d->id,
		d->req, color_of(pg, d->req));
	record_title(pg, d);
	if (is(d, "TAG"))
		fprintf(pg->out,
			"<polygon points=\"%.1f,%d %.1f,%d %.1f,%d %.1f,%d\"/>",
			x, cy - 6, x + 6, cy, x, cy + 6, x - 6, cy);
	else
		fprintf(pg->out, "<circle cx=\"%.1f\" cy=\"%d\" r=\"5\"/>", x,
			cy);
	fputs("</g>\n", pg->out);
}

/* The row label: the request, and its part in the findings. */
static void row_label(struct page *pg, int64_t req, int y)
{
	struct hreq *q = find_req(pg, req);
	FILE *out = pg->out;

	fprintf(out,
		"<text class=\"rowlabel%s%s\" data-req=\"%" PRId64 "\" x=\"8\" "
		"y=\"%d\" fill=\"%s\">",
		q && q->victim ? " victim" : "",
		q && q->source ? " source" : "", req, y + ROW_H / 2 + 4,
		color_of(pg, req));
	html_req(out, req, q ? q->name : NULL);
	if (q && q->victim)
		fputs(" \xc2\xb7 victim", out);
	if (q && q->source)
		fputs(" \xc2\xb7 source", out);
	fputs("</text>\n", out);
}

static void expanded_lane(struct page *pg, struct hlane *l)
{
	FILE *out = pg->out;
	int rows_y = l->y + LANE_HEAD_H;

	fprintf(out,
		"<g class=\"lane expanded\" data-tid=\"%" PRId64 "\">\n"
		"<text class=\"lanetitle\" x=\"4\" y=\"%d\">thread %" PRId64
		"</text>\n",
		l->tid, l->y + 14, l->tid);
	for (int r = 0; r < l->nrows; r++) {
		struct hreq *q = find_req(pg, l->rows[r]);

		fprintf(out,
			"<rect class=\"row%s%s\" x=\"%d\" y=\"%d\" "
			"width=\"%d\" height=\"%d\"/>\n",
			q && q->victim ? " victim" : "",
			q && q->source ? " source" : "", LABEL_W,
			rows_y + r * ROW_H, pg->plot_w, ROW_H);
		row_label(pg, l->rows[r], rows_y + r * ROW_H);
	}
	for (int i = 0; i < pg->nrecs; i++) {
		const struct hrec *d = &pg->recs[i];
		int y = rows_y + row_of(l, d->req) * ROW_H;

		if (d->tid != l->tid)
			continue;
		if (is(d, "BEGIN"))
			scope_bar(pg, d, y);
		else if (is(d, "RESUME") && d->req)
			run_span(pg, i, y);
		else if (is(d, "TAG") || is(d, "EVENT"))
			mark(pg, d, y);
	}
	if (l->others)
		strip(pg, l, rows_y + l->nrows * ROW_H + 2);
	fputs("</g>\n", out);
}

static void folded_lane(struct page *pg, struct hlane *l)
{
	fprintf(pg->out,
		"<g class=\"lane collapsed\" data-tid=\"%" PRId64 "\">\n"
		"<text class=\"lanetitle\" x=\"4\" y=\"%d\">thread %" PRId64
		": %ld records of %ld other requests</text>\n",
		l->tid, l->y + 12, l->tid, l->others, l->other_reqs);
	strip(pg, l, l->y + 17);
	fputs("</g>\n", pg->out);
}

/* y of the row of a finding's victim on its thread, or of the lane. */
static int flag_y(struct page *pg, const struct hfind *f)
{
	struct hlane *l = find_lane(pg, f->tid);
	int r;

	if (l == NULL || !l->expanded)
		return AXIS_H;
	r = row_of(l, f->victim);
	return l->y + LANE_HEAD_H + (r < 0 ? 0 : r) * ROW_H;
}

static void flags(struct page *pg)
{
	FILE *out = pg->out;
	double last_x = -1000;
	int lift = 0;

	for (int i = 0; i < pg->nfinds; i++) {
		const struct hfind *f = &pg->finds[i];
		double x = x_of(pg, f->ts);
		int y = flag_y(pg, f);

		/* Labels of close findings are stacked, not overprinted. */
		lift = x - last_x < 60 ? (lift + 1) % 3 : 0;
		last_x = x;
		fprintf(out,
			"<a class=\"finding %s\" href=\"#f%" PRId64
			"\" data-f=\"%" PRId64 "\">",
			f->cls ? f->cls : "", f->id, f->id);
		fprintf(out, "<title>%s: ", f->cls ? f->cls : "?");
		html(out, f->detail);
		fputs("</title>", out);
		fprintf(out,
			"<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>"
			"<polygon points=\"%.1f,%d %.1f,%d %.1f,%d\"/>"
			"<text x=\"%.1f\" y=\"%d\">%s</text></a>\n",
			x, y - 2 - 9 * lift, x, y + ROW_H, x - 5,
			y - 8 - 9 * lift, x + 5, y - 8 - 9 * lift, x,
			y - 1 - 9 * lift, x + 6, y - 2 - 9 * lift,
			f->cls ? f->cls : "?");
	}
}

/* Lays the lanes out from the top; returns the height of the picture. */
static int layout(struct page *pg)
{
	int y = AXIS_H + 10;

	for (int pass = 1; pass >= 0; pass--)
		for (int i = 0; i < pg->nlanes; i++) {
			struct hlane *l = &pg->lanes[i];

			if (l->expanded != pass)
				continue;
			l->y = y;
			l->h = l->expanded
				   ? LANE_HEAD_H + l->nrows * ROW_H +
					 (l->others ? STRIP_H + 4 : 0) + 8
				   : FOLDED_H;
			y += l->h;
		}
	return y + 10;
}

static void picture(struct page *pg)
{
	int height = layout(pg);
	int folded = 0;

	for (int i = 0; i < pg->nlanes; i++)
		folded += !pg->lanes[i].expanded;
	fprintf(pg->out,
		"<div class=\"scroll\"><svg id=\"timeline\" width=\"%d\" "
		"height=\"%d\">\n",
		LABEL_W + pg->plot_w + 60, height);
	axis(pg);
	for (int i = 0; i < pg->nlanes; i++)
		if (pg->lanes[i].expanded)
			expanded_lane(pg, &pg->lanes[i]);
	if (folded)
		fprintf(pg->out, "<g id=\"folded\">\n");
	for (int i = 0; i < pg->nlanes; i++)
		if (!pg->lanes[i].expanded)
			folded_lane(pg, &pg->lanes[i]);
	if (folded)
		fprintf(pg->out, "</g>\n");
	flags(pg);
	fputs("</svg></div>\n", pg->out);
}

/* ------------------------------------------------------------ page */

static const char style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}"
    ".meta{color:#555}.scroll{overflow-x:auto;border:1px solid #ddd}"
    "svg text{font:11px sans-serif}.axis line{stroke:#eee}"
    ".axis text{fill:#888}rect.gap{fill:#f3f3f3}text.gap{fill:#999}"
    ".lanetitle{font-weight:bold;fill:#444}"
    ".row{fill:#fafafa;stroke:#eee}.row.victim{fill:#fff2f2}"
    ".row.source{fill:#fff7ea}.rowlabel.victim{font-weight:bold}"
    ".scope{fill-opacity:.35;stroke:#0006;stroke-width:.5}"
    ".scope.open{stroke-dasharray:3 2}.run{fill-opacity:.9}"
    ".mark.wrong{stroke:#d00;stroke-width:2}.others rect{fill:#777}"
    ".finding line{stroke:#d00;stroke-width:1.5}.finding polygon{fill:#d00}"
    ".finding text{fill:#d00;font-weight:bold}"
    ".finding.lost text,.finding.misnest text,.finding.unclosed text"
    "{fill:#c60}.finding.hot line{stroke-width:4}"
    ".dim{opacity:.15}"
    "table{border-collapse:collapse}td,th{border:1px solid #ddd;"
    "padding:3px 6px;text-align:left;vertical-align:top}"
    "tr:target,tr.hot{background:#ffec99}.cls{font-weight:bold;color:#d00}"
    ".fix{color:#176a2c}ul.legend{list-style:none;padding:0}"
    "ul.legend li{cursor:pointer;margin:2px 0}"
    ".sw{display:inline-block;width:12px;height:12px;margin-right:6px}"
    ".badge{border-radius:3px;padding:0 4px;margin-left:6px;"
    "font-size:12px;color:#fff}.badge.victim{background:#d00}"
    ".badge.source{background:#e80}.badge.shown{background:#555}";

/* Clicking a request in the legend dims the others; hovering a finding's
 * row marks its flag; the page says when it is drawn (data-ready), which
 * a test reads back. */
static const char script[] =
    "(function(){"
    "var svg=document.getElementById('timeline');"
    "var on=null;"
    "document.querySelectorAll('ul.legend li').forEach(function(li){"
    "li.addEventListener('click',function(){"
    "var r=li.getAttribute('data-req');on=on===r?null:r;"
    "svg.querySelectorAll('[data-req]').forEach(function(e){"
    "e.classList.toggle('dim',on!==null&&e.getAttribute('data-req')!==on);"
    "});});});"
    "document.querySelectorAll('tr.evidence').forEach(function(tr){"
    "var f=svg.querySelector('a.finding[data-f=\"'+tr.id.slice(1)+'\"]');"
    "if(!f)return;"
    "tr.addEventListener('mouseenter',function(){f.classList.add('hot');});"
    "tr.addEventListener('mouseleave',function(){"
    "f.classList.remove('hot');});});"
    "var t=document.getElementById('toggle-folded'),"
    "g=document.getElementById('folded');"
    "if(t&&g)t.addEventListener('click',function(){"
    "g.style.display=g.style.display==='none'?'':'none';});"
    "document.body.setAttribute('data-ready','1');"
    "console.log('ctxleak: timeline drawn: '+"
    "svg.querySelectorAll('g.lane').length+' lanes, '+"
    "svg.querySelectorAll('a.finding').length+' findings');"
    "})();";

static void legend(struct page *pg)
{
	FILE *out = pg->out;

	fputs("<h2>Requests involved</h2>\n<ul class=\"legend\">\n", out);
	for (int i = 0; i < pg->nreqs; i++) {
		const struct hreq *q = &pg->reqs[i];

		fprintf(out,
			"<li class=\"req%s%s%s\" data-req=\"%" PRId64
			"\"><span class=\"sw\" style=\"background:%s\"></span>",
			q->id == pg->id ? " shown" : "",
			q->victim ? " victim" : "", q->source ? " source" : "",
			q->id, q->color);
		html_req(out, q->id, q->name);
		if (q->begin) {
			fputs(", began ", out);
			html_at(pg, q->begin);
		} else {
			fputs(", not retired", out);
		}
		if (q->id == pg->id)
			fputs("<span class=\"badge shown\">shown</span>", out);
		if (q->victim)
			fprintf(out,
				"<span class=\"badge victim\">victim of %d"
				"</span>",
				q->victim);
		if (q->source)
			fprintf(out,
				"<span class=\"badge source\">source of %d"
				"</span>",
				q->source);
		fputs("</li>\n", out);
	}
	fputs("</ul>\n<p class=\"meta\">Click a request to show it alone. "
	      "Bars are scopes (nested ones inset, dashed when never ended), "
	      "the dark strip under them the time its code ran (RESUME to "
	      "SUSPEND); diamonds are tags, dots events, outlined red when "
	      "the backend said they were another request's. Flags are "
	      "findings: click one for its evidence.</p>\n",
	      out);
}

static void evidence(struct page *pg)
{
	FILE *out = pg->out;
	char buf[2048];

	fputs("<h2>Findings and their evidence</h2>\n", out);
	if (pg->nfinds == 0) {
		fputs("<p>No findings involve this request.</p>\n", out);
		return;
	}
	fputs("<table><tr><th>#</th><th>at</th><th>class</th><th>thread</th>"
	      "<th>victim</th><th>source</th><th>evidence</th>"
	      "<th>what happened</th><th>how to fix it</th></tr>\n",
	      out);
	for (int i = 0; i < pg->nfinds; i++) {
		const struct hfind *f = &pg->finds[i];

		fprintf(out,
			"<tr class=\"evidence\" id=\"f%" PRId64
			"\"><td>%" PRId64 "</td><td>",
			f->id, f->id);
		html_at(pg, f->ts);
		fprintf(out,
			"</td><td class=\"cls\">%s</td><td>%" PRId64
			"</td><td>",
			f->cls ? f->cls : "?", f->tid);
		html_req(out, f->victim, f->victim_name);
		fputs("</td><td>", out);
		if (f->source || f->source_name)
			html_req(out, f->source, f->source_name);
		else
			fputs("-", out);
		fputs("</td><td>", out);
		html(out, cli_record_str(f->record, f->name, f->value, buf,
					 sizeof(buf)));
		if (f->site) {
			fputs("<br>at ", out);
			html(out, f->site);
		}
		fputs("</td><td>", out);
		if (f->detail)
			html(out, cli_detail(pg->c, f->process, f->victim,
					     f->detail, buf, sizeof(buf)));
		fputs("</td><td class=\"fix\">", out);
		html(out, cli_class_fix(f->cls));
		fputs("</td></tr>\n", out);
	}
	fputs("</table>\n", out);
}

static void head(struct page *pg)
{
	FILE *out = pg->out;
	struct hreq *q = find_req(pg, pg->id);
	char now[64];
	int folded = 0;
	long others = 0;

	for (int i = 0; i < pg->nlanes; i++) {
		folded += !pg->lanes[i].expanded;
		others += pg->lanes[i].others;
	}
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
	      "charset=\"utf-8\">\n"
	      /* Nothing may be fetched: no script, style, font or image from
	       * elsewhere, whatever a name in the data holds. */
	      "<meta http-equiv=\"Content-Security-Policy\" "
	      "content=\"default-src 'none'; style-src 'unsafe-inline'; "
	      "script-src 'unsafe-inline'\">\n<title>ctxleak: ",
	      out);
	html_req(out, pg->id, q ? q->name : NULL);
	fprintf(out, "</title>\n<style>%s</style></head>\n<body>\n<h1>", style);
	html_req(out, pg->id, q ? q->name : NULL);
	fprintf(out,
		"</h1>\n<p class=\"meta\">%d finding%s involve%s it; %d "
		"request%s involved, %d record%s drawn on %d thread%s",
		pg->nfinds, plural(pg->nfinds), pg->nfinds == 1 ? "s" : "",
		pg->nreqs, plural(pg->nreqs), pg->nrecs, plural(pg->nrecs),
		pg->nlanes - folded, plural(pg->nlanes - folded));
	if (others)
		fprintf(out,
			"; %ld records of other requests in the same time "
			"summarised as grey strips",
			others);
	if (folded)
		fprintf(
		    out,
		    ", %d threads where only they ran folded to one line "
		    "each (<button id=\"toggle-folded\">show/hide</button>)",
		    folded);
	fputs(".<br>Database ", out);
	html(out, pg->c->db_path);
	fprintf(out, ", read %s.</p>\n",
		cli_time_rfc3339(cli_time_now(), now, sizeof(now)));
	if (pg->nrecs == 0)
		fputs("<p>No records kept for it (ctxleakd --keep=leaky "
		      "keeps those of requests involved in a finding, "
		      "--keep=all every one).</p>\n",
		      out);
}

static void free_page(struct page *pg)
{
	for (int i = 0; i < pg->nreqs; i++)
		free(pg->reqs[i].name);
	for (int i = 0; i < pg->nrecs; i++) {
		free(pg->recs[i].type);
		free(pg->recs[i].name);
		free(pg->recs[i].value);
	}
	for (int i = 0; i < pg->nfinds; i++) {
		struct hfind *f = &pg->finds[i];

		free(f->cls);
		free(f->victim_name);
		free(f->source_name);
		free(f->record);
		free(f->name);
		free(f->value);
		free(f->detail);
		free(f->site);
	}
	for (int i = 0; i < pg->nlanes; i++)
		free(pg->lanes[i].rows);
	free(pg->reqs);
	free(pg->recs);
	free(pg->finds);
	free(pg->lanes);
}

static int load(struct page *pg)
{
	int rc = load_reqs(pg);

	if (rc == 0)
		rc = load_finds(pg);
	if (rc == 0)
		rc = load_recs(pg);
	if (rc)
		return rc;
	window(pg);
	pair_scopes(pg);
	build_lanes(pg);
	return pg->nrecs ? load_others(pg) : 0;
}

int cli_html(struct cli *c, int64_t id)
{
	struct page pg = {.c = c, .id = id};
	int rc = load(&pg);

	if (rc == 0) {
		pg.out = fopen(c->html, "w");
		if (pg.out == NULL)
			rc = cli_error(CLI_EXIT_USAGE, "cannot write %s: %s",
				       c->html, strerror(errno));
	}
	if (rc == 0) {
		head(&pg);
		picture(&pg);
		legend(&pg);
		evidence(&pg);
		fprintf(pg.out, "<script>%s</script>\n</body></html>\n",
			script);
		if (fclose(pg.out) != 0)
			rc = cli_error(CLI_EXIT_DB, "cannot write %s: %s",
				       c->html, strerror(errno));
	}
	if (rc == 0)
		fprintf(c->out, "wrote %s: %d lane%s, %d finding%s\n",
			c->html, pg.nlanes, plural(pg.nlanes), pg.nfinds,
			plural(pg.nfinds));
	free_page(&pg);
	return rc;
}
