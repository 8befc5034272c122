/*
 * rules_detail.c: the one-line human description of each finding, as the
 * report shows it ("tag status=200 of request #12 'GET /a' was recorded
 * under request #13 'GET /b' (backend ctx of another request)").
 *
 * Names, keys and values are the client's data: at most DETAIL_QUOTE bytes
 * of each are quoted, and bytes that would break the line or a terminal
 * are shown as '?'.
 */
#include <stdarg.h>
#include <stdio.h>

#include "rules_int.h"

#define DETAIL_QUOTE 64

struct line {
	char *p;
	size_t len, cap;
};

static void put(struct line *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(struct line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->len + 1 >= l->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(l->p + l->len, l->cap - l->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		l->len += (size_t)n < l->cap - l->len ? (size_t)n
						      : l->cap - l->len - 1;
}

static void put_value(struct line *l, struct proto_str s)
{
	uint32_t n = s.len < DETAIL_QUOTE ? s.len : DETAIL_QUOTE;

	if (s.ptr == NULL) {
		put(l, "(nil)");
		return;
	}
	for (uint32_t i = 0; i < n && l->len + 1 < l->cap; i++) {
		unsigned char c = (unsigned char)s.ptr[i];

		l->p[l->len++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	l->p[l->len] = '\0';
	if (s.len > n)
		put(l, "...");
}

static void put_quoted(struct line *l, struct proto_str s)
{
	put(l, "'");
	put_value(l, s);
	put(l, "'");
}

static void put_req(struct line *l, const struct req *q)
{
	if (q == NULL) {
		put(l, "no request");
		return;
	}
	if (q->state == REQ_UNKNOWN) {
		put(l, "unknown request #%llu (ctx %#llx never began)",
		    (unsigned long long)q->rid,
		    (unsigned long long)q->root.ctx);
		return;
	}
	put(l, "request #%llu", (unsigned long long)q->rid);
	if (q->root.name != NULL) {
		put(l, " ");
		put_quoted(l, iname_str(q->root.name));
	}
}

/* What the evidence record is, for TAG, EVENT and child BEGIN. */
static void put_work(struct line *l, const struct proto_record *rec)
{
	switch (rec->type) {
	case PROTO_TAG:
		put(l, "tag ");
		put_value(l, rec->key);
		put(l, "=");
		put_value(l, rec->value);
		break;
	case PROTO_EVENT:
		put(l, "event ");
		put_value(l, rec->name);
		break;
	default:
		put(l, "child scope ");
		put_quoted(l, rec->name);
		break;
	}
}

static void put_misnest(struct line *l, const struct rules_finding *f,
			const struct req *victim, const struct misnest_info *mn)
{
	const struct proto_record *rec = f->rec;

	if (mn->why == MISNEST_ENDED || mn->why == MISNEST_UNKNOWN) {
		put(l, "end of ctx %#llx, which %s, by code of ",
		    (unsigned long long)rec->ctx,
		    mn->why == MISNEST_ENDED ? "had already ended"
					     : "was never begun");
		put_req(l, victim);
		return;
	}
	put(l, "end of scope ");
	put_quoted(l, mn->scope_name);
	put(l, " of ");
	put_req(l, victim);
	if (mn->why == MISNEST_CUR)
		put(l,
		    " while the backend's current ctx was %#llx (closed "
		    "out of order)",
		    (unsigned long long)rec->cur);
	else
		put(l,
		    " on thread %llu by another request's code; it began on "
		    "thread %llu",
		    (unsigned long long)rec->tid,
		    (unsigned long long)mn->begin_tid);
}

static const char *unclosed_why(enum rules_unclosed_reason reason)
{
	switch (reason) {
	case RULES_UNCLOSED_AGE:
		return "older than the maximum request age";
	case RULES_UNCLOSED_LIMIT:
		return "forgotten: the open-scope limit was reached";
	default:
		return "its process went away";
	}
}

static void put_begin(struct line *l, const struct rules_finding *f,
		      const struct req *victim, const struct req *source)
{
	put_req(l, victim);
	if (f->leak == LEAK_STALE) {
		put(l, " began while ended ");
		put_req(l, source);
		put(l, " was still current (storage not cleared)");
	} else {
		put(l, " began while ");
		put_req(l, source);
		put(l, " was still current (it would inherit its context)");
	}
}

static void put_finding(struct line *l, const struct rules_finding *f,
			const struct req *victim, const struct req *source)
{
	const char *verb = f->rec->type == PROTO_BEGIN ? "begun" : "recorded";

	put_work(l, f->rec);
	put(l, victim ? " of " : " with ");
	put_req(l, victim);
	switch (f->leak) {
	case LEAK_LOST:
		put(l,
		    " was %s with no backend ctx (context not carried "
		    "across a callback or thread)",
		    verb);
		break;
	case LEAK_STALE:
		put(l, " was %s under ended ", verb);
		put_req(l, source);
		put(l, " (storage not cleared after it)");
		break;
	default:
		put(l, " was %s under ", verb);
		put_req(l, source);
		put(l, victim ? " (backend ctx of another request)"
			      : " (background work under a request's ctx)");
		break;
	}
}

const char *detail_finding(struct rules *r, const struct rules_finding *f,
			   const struct req *victim, const struct req *source,
			   const struct misnest_info *mn)
{
	struct line l = {r->detail, 0, sizeof(r->detail)};

	r->detail[0] = '\0';
	if (f->leak == LEAK_UNCLOSED) {
		put(&l, "scope ");
		put_quoted(&l, f->rec->name);
		put(&l, " of ");
		put_req(&l, victim);
		put(&l, " begun on thread %llu never ended (%s)",
		    (unsigned long long)f->rec->tid, unclosed_why(f->reason));
	} else if (f->leak == LEAK_MISNEST) {
		put_misnest(&l, f, victim, mn);
	} else if (f->rec->type == PROTO_BEGIN &&
		   f->rec->kind == PROTO_KIND_REQUEST) {
		put_begin(&l, f, victim, source);
	} else {
		put_finding(&l, f, victim, source);
	}
	return r->detail;
}
