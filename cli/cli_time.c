/*
 * cli_time.c: the CLI's times: parsing --since/--until (a duration ago or an
 * RFC 3339 timestamp) and printing wall-clock ns and durations.
 *
 * The database holds wall-clock ns since the epoch (SCHEMA.md); JSON gives
 * them as RFC 3339 in UTC with all nine digits so that no precision is
 * lost, tables as short local times for people.
 */
#include <ctype.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define NS_PER_SEC 1000000000LL

int64_t cli_time_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* "30s", "10m", "2h", "7d", "1w": ns, or -1. */
static int64_t parse_duration(const char *s)
{
	static const struct {
		char unit;
		int64_t ns;
	} units[] = {
	    {'s', NS_PER_SEC},		{'m', 60 * NS_PER_SEC},
	    {'h', 3600 * NS_PER_SEC},	{'d', 86400 * NS_PER_SEC},
	    {'w', 604800 * NS_PER_SEC},
	};
	int64_t n = 0;
	const char *p = s;

	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (*p - '0');
		if (n > 1000000000)
			return -1;
	}
	if (p == s || p[0] == '\0' || p[1] != '\0')
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (units[i].unit == *p)
			return n * units[i].ns;
	return -1;
}

/* Reads exactly n digits into *out; returns the position after them. */
static const char *digits(const char *p, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++, p++) {
		if (!isdigit((unsigned char)*p))
			return NULL;
		*out = *out * 10 + (*p - '0');
	}
	return p;
}

/* ".123456789" into ns (at most 9 digits kept, more ignored). */
static const char *fraction(const char *p, int64_t *ns)
{
	int64_t scale = NS_PER_SEC / 10;

	*ns = 0;
	if (*p != '.')
		return p;
	if (!isdigit((unsigned char)*++p))
		return NULL;
	for (; isdigit((unsigned char)*p); p++, scale /= 10)
		*ns += (*p - '0') * scale;
	return p;
}

/* "Z", "+02:00", "-05:30" into seconds east of UTC. */
static const char *utc_offset(const char *p, int *offset)
{
	int sign, h, m;

	if (*p == 'Z' || *p == 'z') {
		*offset = 0;
		return p + 1;
	}
	if (*p != '+' && *p != '-')
		return NULL;
	sign = *p == '-' ? -1 : 1;
	if (!(p = digits(p + 1, 2, &h)) || *p++ != ':' ||
	    !(p = digits(p, 2, &m)) || h > 23 || m > 59)
		return NULL;
	*offset = sign * (h * 3600 + m * 60);
	return p;
}

/* Days in month mo (1-12) of year y, Gregorian: 2026-02-30 is no date,
 * though timegm() would quietly make it March 2nd. */
static int month_days(int y, int mo)
{
	static const int days[] = {31, 28, 31, 30, 31, 30,
				   31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return days[mo - 1] + (mo == 2 && leap);
}

static int parse_rfc3339(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int y, mo, d, h = 0, mi = 0, sec = 0, offset = 0;
	int64_t ns = 0;
	const char *p = s;

	if (!(p = digits(p, 4, &y)) || *p++ != '-' ||
	    !(p = digits(p, 2, &mo)) || *p++ != '-' || !(p = digits(p, 2, &d)))
		return -1;
	if (*p != '\0') { /* a date alone is midnight UTC */
		if (*p != 'T' && *p != 't' && *p != ' ')
			return -1;
		if (!(p = digits(p + 1, 2, &h)) || *p++ != ':' ||
		    !(p = digits(p, 2, &mi)) || *p++ != ':' ||
		    !(p = digits(p, 2, &sec)) || !(p = fraction(p, &ns)) ||
		    !(p = utc_offset(p, &offset)) || *p != '\0')
			return -1;
	}
	if (mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 ||
	    mi > 59 || sec > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*out = ((int64_t)timegm(&tm) - offset) * NS_PER_SEC + ns;
	return 0;
}

int cli_time_parse(const char *s, int64_t now_ns, int64_t *out)
{
	int64_t d = parse_duration(s);

	if (d >= 0) {
		*out = now_ns - d;
		return 0;
	}
	return parse_rfc3339(s, out);
}

/* Splits ns into seconds and a non-negative remainder. */
static void split(int64_t ns, time_t *sec, long *rem)
{
	*sec = (time_t)(ns / NS_PER_SEC);
	*rem = (long)(ns % NS_PER_SEC);
	if (*rem < 0) {
		*rem += NS_PER_SEC;
		(*sec)--;
	}
}

char *cli_time_rfc3339(int64_t ns, char *buf, size_t len)
{
	struct tm tm;
	time_t sec;
	long rem;
	size_t n;

	split(ns, &sec, &rem);
	gmtime_r(&sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%09ldZ", rem);
	return buf;
}

char *cli_time_short(int64_t ns, char *buf, size_t len)
{
	struct tm tm;
	time_t sec;
	long rem;

	split(ns, &sec, &rem);
	localtime_r(&sec, &tm);
	strftime(buf, len, "%m-%d %H:%M:%S", &tm);
	return buf;
}

char *cli_time_duration(int64_t ns, char *buf, size_t len)
{
	double v = (double)ns;

	if (ns < 0)
		snprintf(buf, len, "-");
	else if (ns < 1000)
		snprintf(buf, len, "%" PRId64 "ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.3gus", v / 1e3);
	else if (ns < NS_PER_SEC)
		snprintf(buf, len, "%.3gms", v / 1e6);
	else if (ns < 60 * NS_PER_SEC)
		snprintf(buf, len, "%.3gs", v / 1e9);
	else if (ns < 3600 * NS_PER_SEC)
		snprintf(buf, len, "%dm%02ds", (int)(ns / (60 * NS_PER_SEC)),
			 (int)(ns / NS_PER_SEC % 60));
	else
		snprintf(buf, len, "%dh%02dm", (int)(ns / (3600 * NS_PER_SEC)),
			 (int)(ns / (60 * NS_PER_SEC) % 60));
	return buf;
}
