/*
 * cli_out.c: everything the CLI writes: tables that fit the terminal,
 * JSON lines, colour, and the sanitising of client bytes.
 *
 * Strings in the database come from clients and may hold any bytes.  Both
 * outputs must stay valid whatever they hold: a table never passes control
 * characters to the terminal (no client may move its cursor or change its
 * colours), and JSON never holds invalid UTF-8, which strict parsers
 * reject; both show an invalid byte as U+FFFD.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

#define REPLACEMENT    "\xef\xbf\xbd" /* U+FFFD */
#define ELLIPSIS       "\xe2\x80\xa6" /* U+2026 */
#define TABLE_WIDTH    80
#define MIN_WIDTH      40 /* narrower than this, tables are unreadable */
#define COLUMN_GAP     2
#define JSON_MAX_DEPTH 16

/* ------------------------------------------------------------ colour */

int cli_color_wanted(enum cli_color mode, FILE *out)
{
	const char *no_color = getenv("NO_COLOR");

	/* As no-color.org asks, an explicit --color=always overrides it. */
	if (mode != CLI_COLOR_AUTO)
		return mode == CLI_COLOR_ALWAYS;
	if (no_color && *no_color)
		return 0;
	return isatty(fileno(out));
}

const char *cli_style_start(const struct cli *c, enum cli_style style)
{
	static const char *const codes[] = {
	    [CLI_STYLE_NONE] = "",	    [CLI_STYLE_BOLD] = "\033[1m",
	    [CLI_STYLE_RED] = "\033[31m",   [CLI_STYLE_YELLOW] = "\033[33m",
	    [CLI_STYLE_GREEN] = "\033[32m", [CLI_STYLE_DIM] = "\033[2m",
	};

	return c->color ? codes[style] : "";
}

const char *cli_style_end(const struct cli *c, enum cli_style style)
{
	return c->color && style != CLI_STYLE_NONE ? "\033[0m" : "";
}

enum cli_style cli_class_style(const char *cls)
{
	/* Data recorded under the wrong request is the harm; the rest are
	 * symptoms of it or of bookkeeping errors. */
	if (cls && (!strcmp(cls, "bleed") || !strcmp(cls, "stale") ||
		    !strcmp(cls, "overlap")))
		return CLI_STYLE_RED;
	return cls && *cls ? CLI_STYLE_YELLOW : CLI_STYLE_NONE;
}

/* A malloc'd copy of client bytes that is safe on a terminal. */
static char *safe_dup(const char *s, size_t len)
{
	char *out = malloc(len * 3 + 1), *o = out;
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;
	uint32_t cp;

	if (out == NULL)
		abort();
	while (i < len) {
		n = cli_utf8_next(p + i, len - i, &cp);
		if (n == 0) {
			memcpy(o, REPLACEMENT, 3);
			o += 3;
			i++;
		} else if (cp < 0x20 || cp == 0x7f ||
			   (cp >= 0x80 && cp < 0xa0)) {
			*o++ = '?';
			i += n;
		} else {
			memcpy(o, p + i, n);
			o += n;
			i += n;
		}
	}
	*o = '\0';
	return out;
}

void cli_print_safe(FILE *out, const char *s, size_t len)
{
	char *safe = safe_dup(s, len);

	fputs(safe, out);
	free(safe);
}

char *cli_ctx_str(int64_t ctx, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64, (uint64_t)ctx);
	return buf;
}

char *cli_record_str(const char *type, const char *name, const char *value,
		     char *buf, size_t len)
{
	const char *sep = type && !strcmp(type, "TAG") ? "=" : ": ";

	snprintf(buf, len, "%s%s%s%s%s", type ? type : "?", name ? " " : "",
		 name ? name : "", value ? sep : "", value ? value : "");
	return buf;
}

char *cli_request_label(int64_t id, const char *name, int namelen, char *buf,
			size_t len)
{
	if (id && name)
		snprintf(buf, len, "#%" PRId64 " %.*s", id, namelen, name);
	else if (id)
		snprintf(buf, len, "#%" PRId64, id);
	else if (name)
		snprintf(buf, len, "%.*s", namelen, name);
	else
		snprintf(buf, len, "-");
	return buf;
}

char *cli_detail(struct cli *c, int64_t process_id, int64_t victim,
		 const char *detail, char *buf, size_t len)
{
	size_t n = 0;
	const char *p = detail;

	buf[0] = '\0';
	while (p && *p && n + 1 < len) {
		char *end;
		uint64_t ctx;
		int64_t id;

		if (!common_detail_ctx_at(detail, p)) {
			buf[n++] = *p++;
			continue;
		}
		ctx = strtoull(p, &end, 16);
		p = end;
		id = cli_db_ctx_request(c, process_id, victim, (int64_t)ctx);
		n += id ? snprintf(buf + n, len - n, "#%" PRId64, id)
			: snprintf(buf + n, len - n, "%" PRIu64, ctx);
		if (n >= len)
			n = len - 1;
	}
	buf[n] = '\0';
	return buf;
}

/* ------------------------------------------------------------ tables */

struct cli_table {
	const struct cli *c;
	const struct cli_col *cols;
	int ncols;
	char **cells; /* sanitised, row-major */
	enum cli_style *styles;
	size_t ncells, cap;
};

struct cli_table *cli_table_new(const struct cli *c, const struct cli_col *cols,
				int ncols)
{
	struct cli_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		abort();
	t->c = c;
	t->cols = cols;
	t->ncols = ncols;
	return t;
}

void cli_table_cell_styled(struct cli_table *t, enum cli_style style,
			   const char *s)
{
	if (t->ncells == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->cells = realloc(t->cells, t->cap * sizeof(*t->cells));
		t->styles = realloc(t->styles, t->cap * sizeof(*t->styles));
		if (t->cells == NULL || t->styles == NULL)
			abort();
	}
	if (s == NULL)
		s = "-";
	t->cells[t->ncells] = safe_dup(s, strlen(s));
	t->styles[t->ncells++] = style;
}

void cli_table_cell(struct cli_table *t, const char *s)
{
	cli_table_cell_styled(t, CLI_STYLE_NONE, s);
}

void cli_table_cellf(struct cli_table *t, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cli_table_cell(t, buf);
}

/* Columns on the screen: code points, since cells are sanitised UTF-8. */
static int text_width(const char *s)
{
	int w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

/* Byte length of the first w columns of s. */
static size_t prefix_bytes(const char *s, int w)
{
	size_t i = 0;

	for (; s[i] && w >= 0; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80 && w-- == 0)
			break;
	return i;
}

/* COLUMNS comes first, as for ls(1): a script or a pager that sets it
 * knows where the output goes better than the ioctl. */
int cli_screen_width(const struct cli *c)
{
	const char *columns = getenv("COLUMNS");
	struct winsize ws;
	char *end;
	long n;

	if (c->wide)
		return INT_MAX;
	if (columns && *columns) {
		n = strtol(columns, &end, 10);
		if (*end == '\0' && n >= MIN_WIDTH && n <= 100000)
			return (int)n;
	}
	if (isatty(fileno(c->out)) &&
	    ioctl(fileno(c->out), TIOCGWINSZ, &ws) == 0 &&
	    ws.ws_col >= MIN_WIDTH)
		return ws.ws_col;
	return TABLE_WIDTH;
}

/* Shrinks the widest shrinkable columns until the table fits. */
static void fit_widths(const struct cli_table *t, int *w, int width)
{
	int total = COLUMN_GAP * (t->ncols - 1);

	for (int i = 0; i < t->ncols; i++)
		total += w[i];
	while (total > width) {
		int widest = -1;

		for (int i = 0; i < t->ncols; i++) {
			int floor = text_width(t->cols[i].header);

			if ((t->cols[i].flags & CLI_COL_SHRINK) &&
			    w[i] > (floor > 4 ? floor : 4) &&
			    (widest < 0 || w[i] > w[widest]))
				widest = i;
		}
		if (widest < 0)
			return;
		w[widest]--;
		total--;
	}
}

/* One cell and what follows it: the gap, or the end of the line. */
static void print_cell(const struct cli_table *t, const char *s,
		       enum cli_style style, int width, int col, int last)
{
	int tw = text_width(s);
	int pad = tw < width ? width - tw : 0;
	FILE *out = t->c->out;

	if (t->cols[col].flags & CLI_COL_RIGHT)
		fprintf(out, "%*s", pad, "");
	fputs(cli_style_start(t->c, style), out);
	if (tw > width) {
		fwrite(s, 1, prefix_bytes(s, width - 1), out);
		fputs(ELLIPSIS, out);
	} else {
		fputs(s, out);
	}
	fputs(cli_style_end(t->c, style), out);
	if (!(t->cols[col].flags & CLI_COL_RIGHT) && !last)
		fprintf(out, "%*s", pad, "");
	fputs(last ? "\n" : "  ", out);
}

/* Cells after the last non-empty one are left out: no trailing blanks. */
static void print_row(const struct cli_table *t, char *const *cells,
		      const enum cli_style *styles, const int *w)
{
	int last = t->ncols - 1;

	while (last > 0 && cells[last][0] == '\0')
		last--;
	for (int k = 0; k <= last; k++)
		print_cell(t, cells[k], styles[k], w[k], k, k == last);
}

void cli_table_print(struct cli_table *t)
{
	int w[32] = {0};
	char *headers[32];
	enum cli_style bold[32];

	for (int i = 0; i < t->ncols; i++) {
		w[i] = text_width(t->cols[i].header);
		headers[i] = (char *)t->cols[i].header;
		bold[i] = CLI_STYLE_BOLD;
	}
	for (size_t i = 0; i < t->ncells; i++) {
		int tw = text_width(t->cells[i]);

		if (tw > w[i % t->ncols])
			w[i % t->ncols] = tw;
	}
	fit_widths(t, w, cli_screen_width(t->c));
	print_row(t, headers, bold, w);
	for (size_t i = 0; i + t->ncols <= t->ncells; i += t->ncols)
		print_row(t, t->cells + i, t->styles + i, w);
}

void cli_table_free(struct cli_table *t)
{
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->styles);
	free(t);
}

/* Where a line of at most width columns that starts at s ends: after the
 * last word that fits, or mid-word when one word is wider than a line. */
static const char *line_break(const char *s, int width)
{
	const char *space = NULL, *p = s;

	for (int w = 0; *p; p++) {
		if (((unsigned char)*p & 0xc0) == 0x80)
			continue;
		if (*p == ' ')
			space = p;
		if (++w > width)
			return space && space > s ? space : p;
	}
	return p;
}

void cli_print_wrapped(const struct cli *c, enum cli_style style, int indent,
		       const char *s)
{
	char *safe = safe_dup(s, strlen(s));
	int width = cli_screen_width(c) - indent;
	const char *p = safe, *end;

	while (*p) {
		end = line_break(p, width > 20 ? width : 20);
		fprintf(c->out, "%*s%s%.*s%s\n", indent, "",
			cli_style_start(c, style), (int)(end - p), p,
			cli_style_end(c, style));
		for (p = end; *p == ' '; p++)
			;
	}
	free(safe);
}

/* ------------------------------------------------------------ JSON */

struct cli_json {
	FILE *out;
	int depth;
	int after_key;
	char closer[JSON_MAX_DEPTH];
	unsigned items[JSON_MAX_DEPTH];
};

struct cli_json *cli_json_new(FILE *out)
{
	struct cli_json *j = calloc(1, sizeof(*j));

	if (j == NULL)
		abort();
	j->out = out;
	return j;
}

void cli_json_free(struct cli_json *j)
{
	free(j);
}

/* The comma before a value, unless it follows its key. */
static void before_value(struct cli_json *j)
{
	if (j->after_key)
		j->after_key = 0;
	else if (j->depth > 0 && j->items[j->depth - 1]++)
		fputc(',', j->out);
}

static void open_container(struct cli_json *j, char open, char close)
{
	before_value(j);
	if (j->depth == JSON_MAX_DEPTH)
		abort();
	j->closer[j->depth] = close;
	j->items[j->depth++] = 0;
	fputc(open, j->out);
}

void cli_json_object(struct cli_json *j)
{
	open_container(j, '{', '}');
}

void cli_json_array(struct cli_json *j)
{
	open_container(j, '[', ']');
}

void cli_json_end(struct cli_json *j)
{
	fputc(j->closer[--j->depth], j->out);
	if (j->depth == 0)
		fputc('\n', j->out);
}

/* Bytes that need no escape are written in runs: one call per string,
 * not per character, in the common case. */
static void write_string(FILE *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0, n;
	uint32_t cp;

	fputc('"', out);
	while (i < len) {
		n = cli_utf8_next(p + i, len - i, &cp);
		if (n && cp != '"' && cp != '\\' && cp >= 0x20 && cp != 0x7f) {
			i += n;
			continue;
		}
		fwrite(p + run, 1, i - run, out);
		if (n == 0)
			fputs(REPLACEMENT, out);
		else if (cp == '"' || cp == '\\')
			fprintf(out, "\\%c", (int)cp);
		else
			fprintf(out, "\\u%04x", (unsigned)cp);
		i += n ? n : 1;
		run = i;
	}
	fwrite(p + run, 1, i - run, out);
	fputc('"', out);
}

void cli_json_key(struct cli_json *j, const char *key)
{
	if (j->items[j->depth - 1]++)
		fputc(',', j->out);
	write_string(j->out, key, strlen(key));
	fputc(':', j->out);
	j->after_key = 1;
}

void cli_json_str(struct cli_json *j, const char *s, size_t len)
{
	before_value(j);
	write_string(j->out, s, len);
}

void cli_json_int(struct cli_json *j, long long v)
{
	before_value(j);
	fprintf(j->out, "%lld", v);
}

void cli_json_null(struct cli_json *j)
{
	before_value(j);
	fputs("null", j->out);
}

void cli_json_kstr(struct cli_json *j, const char *key, const char *s)
{
	cli_json_key(j, key);
	if (s)
		cli_json_str(j, s, strlen(s));
	else
		cli_json_null(j);
}

void cli_json_kint(struct cli_json *j, const char *key, long long v)
{
	cli_json_key(j, key);
	cli_json_int(j, v);
}

void cli_json_kbool(struct cli_json *j, const char *key, int v)
{
	cli_json_key(j, key);
	before_value(j);
	fputs(v ? "true" : "false", j->out);
}

void cli_json_kctx(struct cli_json *j, const char *key, int64_t ctx)
{
	char buf[24];

	cli_json_kstr(j, key, ctx ? cli_ctx_str(ctx, buf, sizeof(buf)) : NULL);
}

void cli_json_kts(struct cli_json *j, const char *key, int64_t ns)
{
	char buf[64];

	cli_json_kstr(j, key,
		      ns ? cli_time_rfc3339(ns, buf, sizeof(buf)) : NULL);
}

void cli_json_kusec(struct cli_json *j, const char *key, int64_t ns)
{
	cli_json_key(j, key);
	before_value(j);
	fprintf(j->out, "%s%" PRId64 ".%03" PRId64, ns < 0 ? "-" : "",
		(ns < 0 ? -ns : ns) / 1000, (ns < 0 ? -ns : ns) % 1000);
}

void cli_json_kcol(struct cli_json *j, const char *key, struct cli_stmt *st,
		   int col)
{
	int len;
	const char *s;

	cli_json_key(j, key);
	switch (cli_stmt_type(st, col)) {
	case CLI_TYPE_NULL:
		cli_json_null(j);
		break;
	case CLI_TYPE_INT:
		cli_json_int(j, cli_stmt_int(st, col));
		break;
	default:
		s = cli_db_text(st, col, &len);
		cli_json_str(j, s, (size_t)len);
	}
}
