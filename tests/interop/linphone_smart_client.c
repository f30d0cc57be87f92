/*
 * linphone_smart_client: a real liblinphone 5.1 client acting as the Linphone
 * app's "smart contact list", for interop tests of the smart-presence server.
 *
 * It creates a LinphoneCore (no media devices), one proxy config pointing at
 * --server with a route and a dial prefix, one friend list with an RLS URI
 * and subscriptions enabled, and one friend per phone number given on the
 * command line. It then iterates the core for --duration seconds.
 *
 * stdout (line-buffered, machine-readable, nothing else is written there):
 *   PRESENCE <number-as-given> <open|closed|none> <contact-uri|-> <t_ms>
 *       printed whenever what liblinphone reports for that number changes
 *       (the presence model liblinphone stores for the number, read with
 *       linphone_friend_get_presence_model_for_uri_or_tel()).
 *   FINAL <number> USER <sip-uri>     at exit, when basic=open and a contact is set
 *   FINAL <number> NOTUSER            otherwise
 *
 * stderr: human-readable event log: registration states, one line per SIP
 * message sent/received, list-SUBSCRIBE state changes and RLMI handling (from
 * liblinphone's log: liblinphone 5.1 does not report the friend list's
 * subscription through the core callbacks), presence callbacks, and
 * liblinphone's full logs with --log-level.
 *
 * Findings and gotchas: tests/interop/README.md.
 *
 * Build: tests/interop/build.sh [output-path]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <linphone/core.h>
#include <linphone/api/c-types.h>
#include <linphone/api/c-content.h>
#include <linphone/logging.h>

typedef struct {
	const char *number;        /* as given on the command line */
	LinphoneFriend *fr;
	char last_basic[16];       /* last printed state, "" = never printed */
	char *last_contact;
	int last_sub_state;        /* last logged linphone_friend_get_subscription_state(), -1 = never */
	char *last_rich;           /* last printed RICH line (without its time), NULL = never */
} Tracked;

static struct timespec g_start;
static Tracked *g_tracked = NULL;
static int g_ntracked = 0;
static volatile sig_atomic_t g_stop = 0;

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)(ts.tv_sec - g_start.tv_sec) * 1000LL + (ts.tv_nsec - g_start.tv_nsec) / 1000000LL;
}

static void elog(const char *fmt, ...) {
	va_list ap;
	fprintf(stderr, "[%6lld ms] ", now_ms());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void on_signal(int sig) {
	(void)sig;
	g_stop = 1;
}

/* ---- what liblinphone concluded for one number ---- */

static const LinphonePresenceModel *model_for(const Tracked *t) {
	return linphone_friend_get_presence_model_for_uri_or_tel(t->fr, t->number);
}

static void read_state(const Tracked *t, const char **basic, char **contact) {
	const LinphonePresenceModel *m = model_for(t);
	*contact = NULL;
	if (!m) {
		*basic = "none";
		return;
	}
	*basic = linphone_presence_model_get_basic_status(m) == LinphonePresenceBasicStatusOpen ? "open" : "closed";
	*contact = linphone_presence_model_get_contact(m); /* malloc'd or NULL */
}

static void check_rich(void);

/* Print a PRESENCE line for every tracked number whose state changed. */
static void check_changes(const char *why) {
	for (int i = 0; i < g_ntracked; i++) {
		Tracked *t = &g_tracked[i];
		const char *basic;
		char *contact;
		read_state(t, &basic, &contact);
		const char *c = contact && contact[0] ? contact : "-";
		int changed = strcmp(t->last_basic, basic) != 0 ||
			(t->last_contact && strcmp(t->last_contact, c) != 0);
		/* Nothing to report before anything was ever received. */
		if (t->last_basic[0] == '\0' && strcmp(basic, "none") == 0) changed = 0;
		if (changed) {
			long long ms = now_ms();
			printf("PRESENCE %s %s %s %lld\n", t->number, basic, c, ms);
			fflush(stdout);
			const LinphonePresenceModel *m = model_for(t);
			int cp = m ? (int)linphone_presence_model_get_consolidated_presence(m) : -1;
			elog("presence change for %s -> %s %s, consolidated=%s (detected in %s)", t->number, basic, c,
				cp == LinphoneConsolidatedPresenceOnline ? "online" : cp == LinphoneConsolidatedPresenceBusy ? "busy" :
				cp == LinphoneConsolidatedPresenceDoNotDisturb ? "dnd" : cp == LinphoneConsolidatedPresenceOffline ? "offline" : "none",
				why);
			snprintf(t->last_basic, sizeof t->last_basic, "%s", basic);
			free(t->last_contact);
			t->last_contact = strdup(c);
		}
		if (contact) bctbx_free(contact);
	}
	check_rich();
}

/* What liblinphone parsed beyond basic/contact: the activity, the note (any language), the
 * friend's capabilities as liblinphone's own capability checks see them, and the model's
 * timestamp ("last seen"). Written into buf as one RICH line body. */
static void read_rich(const Tracked *t, char *buf, size_t n) {
	const LinphonePresenceModel *m = model_for(t);
	if (!m) { snprintf(buf, n, "activity=- | caps=- | ts=- | note=-"); return; }
	const LinphonePresenceActivity *a = linphone_presence_model_get_activity(m);
	char *as = a ? linphone_presence_activity_to_string(a) : NULL;
	const LinphonePresenceNote *note = linphone_presence_model_get_note(m, NULL);
	const char *nc = note ? linphone_presence_note_get_content(note) : NULL;
	char caps[96] = "";
	if (linphone_friend_has_capability(t->fr, LinphoneFriendCapabilityGroupChat))
		snprintf(caps + strlen(caps), sizeof caps - strlen(caps), "groupchat/%.1f,", (double)linphone_friend_get_capability_version(t->fr, LinphoneFriendCapabilityGroupChat));
	if (linphone_friend_has_capability(t->fr, LinphoneFriendCapabilityLimeX3dh)) strcat(caps, "lime,");
	if (linphone_friend_has_capability(t->fr, LinphoneFriendCapabilityEphemeralMessages))
		snprintf(caps + strlen(caps), sizeof caps - strlen(caps), "ephemeral/%.1f,", (double)linphone_friend_get_capability_version(t->fr, LinphoneFriendCapabilityEphemeralMessages));
	if (caps[0]) caps[strlen(caps) - 1] = '\0'; else strcpy(caps, "-");
	snprintf(buf, n, "activity=%s | caps=%s | ts=%lld | note=%s", as && as[0] ? as : "-", caps,
		(long long)linphone_presence_model_get_timestamp(m), nc && nc[0] ? nc : "-");
	if (as) bctbx_free(as);
}

/* Print a RICH line for every tracked number whose rich state changed (with --rich only:
 * reading it for thousands of friends every 20 ms slows the client down). */
static int g_rich = 0;
static void check_rich(void) {
	if (!g_rich) return;
	for (int i = 0; i < g_ntracked; i++) {
		Tracked *t = &g_tracked[i];
		char buf[1024];
		read_rich(t, buf, sizeof buf);
		if (!t->last_rich && strncmp(buf, "activity=- | caps=- | ts=- ", 27) == 0) continue;
		if (t->last_rich && strcmp(t->last_rich, buf) == 0) continue;
		printf("RICH %s | %s | %lld\n", t->number, buf, now_ms());
		fflush(stdout);
		free(t->last_rich);
		t->last_rich = strdup(buf);
	}
}

/* Log changes of each friend's own subscription state (stderr only). */
static void poll_friend_sub_states(void) {
	for (int i = 0; i < g_ntracked; i++) {
		Tracked *t = &g_tracked[i];
		int st = (int)linphone_friend_get_subscription_state(t->fr);
		if (st != t->last_sub_state) {
			elog("friend %s subscription state: %s", t->number,
				linphone_subscription_state_to_string((LinphoneSubscriptionState)st));
			t->last_sub_state = st;
		}
	}
}

/* ---- callbacks ---- */

/* liblinphone logs. Everything at or above --log-level is copied to stderr.
 * Below it, a compact trace is still written: one line per SIP message sent or
 * received (start line + CSeq, taken from belle-sip's own channel log) and
 * liblinphone's lines about subscription states and RLMI/multipart handling.
 * This is the only way to see list-SUBSCRIBE states: liblinphone 5.1 does not
 * call the core's subscription_state_changed / notify_received callbacks for
 * the friend list's own LinphoneEvent. */
static int g_log_threshold = 0; /* 0 none, 1 error, 2 warning, 3 message, 4 debug */

static int level_rank(LinphoneLogLevel lev) {
	switch (lev) {
	case LinphoneLogLevelDebug: case LinphoneLogLevelTrace: return 4;
	case LinphoneLogLevelMessage: return 3;
	case LinphoneLogLevelWarning: return 2;
	default: return 1;
	}
}

static void copy_line(char *dst, size_t n, const char *src) {
	size_t i = 0;
	while (src && src[i] && src[i] != '\r' && src[i] != '\n' && i + 1 < n) { dst[i] = src[i]; i++; }
	dst[i] = '\0';
}

static void on_log(LinphoneLoggingService *ls, const char *domain, LinphoneLogLevel lev, const char *msg) {
	(void)ls;
	if (!msg) return;
	if (level_rank(lev) <= g_log_threshold) {
		const char *l = lev == LinphoneLogLevelDebug ? "debug" : lev == LinphoneLogLevelTrace ? "trace" :
			lev == LinphoneLogLevelMessage ? "message" : lev == LinphoneLogLevelWarning ? "warning" :
			lev == LinphoneLogLevelError ? "error" : "fatal";
		fprintf(stderr, "[%6lld ms] liblinphone %s %s: %s\n", now_ms(), domain ? domain : "", l, msg);
		return;
	}
	const char *sent = strstr(msg, "message sent to [");
	const char *recv = strstr(msg, "new bytes from [");
	if (sent || recv) {
		const char *peer = strchr(sent ? sent : recv, '[');
		char peerbuf[128], first[256] = "", cseq[64] = "";
		copy_line(peerbuf, sizeof peerbuf, peer);
		char *close = strchr(peerbuf, ']');
		if (close) close[1] = '\0';
		const char *nl = strchr(msg, '\n');
		if (nl) copy_line(first, sizeof first, nl + 1);
		const char *cs = strstr(msg, "\nCSeq:");
		if (cs) copy_line(cseq, sizeof cseq, cs + 1);
		if (first[0] == '\0' || (first[0] == '\r')) return; /* keep-alive */
		elog("SIP %s %s: %s | %s", sent ? "sent to" : "recv from", peerbuf, first, cseq);
		return;
	}
	if (strstr(msg, "subscription state") || strstr(msg, "Receiving new state") ||
		strstr(msg, "subscription update skipped") || strstr(msg, "Notify presence for list") ||
		strstr(msg, "rlmi") || strstr(msg, "Discarding") || strstr(msg, "Cannot find part") ||
		strstr(msg, "multipart") || strstr(msg, "presence") || strstr(msg, "Presence") ||
		(lev == LinphoneLogLevelError && domain && strcmp(domain, "liblinphone") == 0 && !strstr(msg, "soundcard"))) {
		char line[600];
		copy_line(line, sizeof line, msg);
		elog("liblinphone: %s", line);
	}
}

static void on_global_state(LinphoneCore *lc, LinphoneGlobalState gs, const char *msg) {
	(void)lc;
	elog("core global state: %s (%s)", linphone_global_state_to_string(gs), msg ? msg : "");
}

static void on_registration(LinphoneCore *lc, LinphoneProxyConfig *cfg, LinphoneRegistrationState st, const char *msg) {
	(void)lc; (void)cfg;
	elog("REGISTER state: %s (%s)", linphone_registration_state_to_string(st), msg ? msg : "");
}

static void on_subscription_state(LinphoneCore *lc, LinphoneEvent *ev, LinphoneSubscriptionState st) {
	(void)lc;
	const LinphoneAddress *res = linphone_event_get_resource(ev);
	char *r = res ? linphone_address_as_string(res) : NULL;
	elog("SUBSCRIBE state: %s event=%s resource=%s reason=%s", linphone_subscription_state_to_string(st),
		linphone_event_get_name(ev) ? linphone_event_get_name(ev) : "?", r ? r : "?",
		linphone_reason_to_string(linphone_event_get_reason(ev)));
	if (r) bctbx_free(r);
}

static void on_notify(LinphoneCore *lc, LinphoneEvent *ev, const char *event_name, const LinphoneContent *body) {
	(void)lc; (void)ev;
	const char *type = body ? linphone_content_get_type(body) : NULL;
	const char *sub = body ? linphone_content_get_subtype(body) : NULL;
	elog("NOTIFY received: event=%s content=%s/%s size=%zu", event_name ? event_name : "?",
		type ? type : "-", sub ? sub : "-", body ? linphone_content_get_size(body) : (size_t)0);
}

static void on_presence_friend(LinphoneCore *lc, LinphoneFriend *fr) {
	(void)lc;
	bctbx_list_t *nums = linphone_friend_get_phone_numbers(fr);
	elog("core cb notify_presence_received for friend %s", nums ? (const char *)nums->data : "?");
	bctbx_list_free(nums); /* entries are const char*, owned by the friend */
	check_changes("core notify_presence_received");
}

/* Print a CALLBACK line: the app was told of this friend (what an app redraws on). */
static void print_callback(LinphoneFriend *fr, const char *which) {
	for (int i = 0; i < g_ntracked; i++) {
		if (g_tracked[i].fr != fr) continue;
		printf("CALLBACK %s %s %lld\n", g_tracked[i].number, which, now_ms());
		fflush(stdout);
		return;
	}
}

static void on_presence_uri_or_tel(LinphoneCore *lc, LinphoneFriend *fr, const char *uri_or_tel, const LinphonePresenceModel *m) {
	(void)lc;
	print_callback(fr, "uri_or_tel");
	char *c = m ? linphone_presence_model_get_contact(m) : NULL;
	elog("core cb notify_presence_received_for_uri_or_tel uri_or_tel=%s basic=%s contact=%s", uri_or_tel ? uri_or_tel : "?",
		m ? (linphone_presence_model_get_basic_status(m) == LinphonePresenceBasicStatusOpen ? "open" : "closed") : "none",
		c ? c : "-");
	if (c) bctbx_free(c);
	check_changes("core notify_presence_received_for_uri_or_tel");
}

static void on_list_presence(LinphoneFriendList *fl, const bctbx_list_t *friends) {
	(void)fl;
	for (const bctbx_list_t *it = friends; it; it = bctbx_list_next(it)) print_callback((LinphoneFriend *)bctbx_list_get_data(it), "list");
	elog("friend-list cb presence_received for %zu friend(s)", bctbx_list_size(friends));
	check_changes("friend-list presence_received");
}

/* ---- setup helpers ---- */

static LinphoneProxyConfig *add_proxy(LinphoneCore *lc, LinphoneFactory *factory, const char *identity,
	const char *server, const char *transport, const char *dial_prefix, int do_register, int do_publish) {
	LinphoneAddress *ident = linphone_factory_create_address(factory, identity);
	if (!ident) { fprintf(stderr, "bad --identity %s\n", identity); return NULL; }
	char server_uri[512];
	snprintf(server_uri, sizeof server_uri, "sip:%s;transport=%s", server, transport);
	LinphoneProxyConfig *cfg = linphone_core_create_proxy_config(lc);
	linphone_proxy_config_edit(cfg);
	linphone_proxy_config_set_identity_address(cfg, ident);
	if (linphone_proxy_config_set_server_addr(cfg, server_uri) != 0) {
		fprintf(stderr, "bad server address %s\n", server_uri);
		return NULL;
	}
	/* Route: the server itself (belle-sip adds ;lr). */
	char route_uri[520];
	snprintf(route_uri, sizeof route_uri, "<%s>", server_uri);
	bctbx_list_t *routes = bctbx_list_append(NULL, route_uri);
	linphone_proxy_config_set_routes(cfg, routes);
	bctbx_list_free(routes);
	/* Dial prefix = country calling code used to normalise national numbers. */
	linphone_proxy_config_set_dial_prefix(cfg, dial_prefix);
	linphone_proxy_config_set_dial_escape_plus(cfg, FALSE);
	linphone_proxy_config_enable_register(cfg, do_register ? TRUE : FALSE);
	linphone_proxy_config_enable_publish(cfg, do_publish ? TRUE : FALSE);
	if (do_publish) linphone_proxy_config_set_publish_expires(cfg, 3600);
	/* liblinphone 5.1 announces group chat (and ephemeral) only with a conference factory. */
	if (do_publish) linphone_proxy_config_set_conference_factory_uri(cfg, "sip:conference-factory@example.org");
	linphone_proxy_config_done(cfg);
	if (linphone_core_add_proxy_config(lc, cfg) != 0) { fprintf(stderr, "linphone_core_add_proxy_config failed\n"); return NULL; }
	linphone_core_set_default_proxy_config(lc, cfg);
	linphone_address_unref(ident);
	return cfg;
}

/* Digest credentials for the identity's username, any realm. */
static void add_credentials(LinphoneCore *lc, LinphoneFactory *factory, const char *identity, const char *password) {
	LinphoneAddress *ident = linphone_factory_create_address(factory, identity);
	if (!ident) return;
	LinphoneAuthInfo *ai = linphone_factory_create_auth_info(factory, linphone_address_get_username(ident), NULL,
		password, NULL, NULL, NULL);
	linphone_core_add_auth_info(lc, ai);
	linphone_auth_info_unref(ai);
	linphone_address_unref(ident);
}

/* Add one friend with one phone number to the list and track it. */
static void add_friend(LinphoneCore *lc, LinphoneFriendList *fl, const char *number) {
	Tracked *t = &g_tracked[g_ntracked];
	t->number = number;
	t->last_sub_state = -1;
	LinphoneFriend *fr = linphone_core_create_friend(lc);
	linphone_friend_edit(fr);
	char name[128];
	snprintf(name, sizeof name, "Contact %d", g_ntracked + 1);
	linphone_friend_set_name(fr, name);
	linphone_friend_add_phone_number(fr, number);
	linphone_friend_enable_subscribes(fr, TRUE);
	linphone_friend_set_inc_subscribe_policy(fr, LinphoneSPDeny);
	linphone_friend_done(fr);
	LinphoneFriendListStatus st = linphone_friend_list_add_friend(fl, fr);
	if (st != LinphoneFriendListOK) elog("linphone_friend_list_add_friend(%s) returned %d", number, (int)st);
	t->fr = fr; /* keep our ref */
	g_ntracked++;
}

/* The activities --publish knows (RFC 4480 tokens); "online" is handled apart (no activity). */
static int activity_of(const char *s, LinphonePresenceActivityType *out) {
	static const struct { const char *name; LinphonePresenceActivityType type; } known[] = {
		{"away", LinphonePresenceActivityAway},
		{"busy", LinphonePresenceActivityBusy}, {"on-the-phone", LinphonePresenceActivityOnThePhone},
		{"meeting", LinphonePresenceActivityMeeting}, {"vacation", LinphonePresenceActivityVacation},
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (strcmp(s, known[i].name) == 0) { *out = known[i].type; return 1; }
	return 0;
}

static void usage(FILE *f, const char *argv0) {
	fprintf(f,
		"usage: %s --server HOST:PORT [options] NUMBER...\n"
		"  --server HOST:PORT       SIP server (loopback only; IPv6 as [::1]:PORT)\n"
		"  --transport udp|tcp      default udp\n"
		"  --identity SIP-URI       default sip:alice@example.org\n"
		"  --password PW            digest password of the identity (answers 401 challenges)\n"
		"  --rls SIP-URI            friend list RLS URI, default sip:rls@example.org\n"
		"  --dial-prefix CC         account dial prefix (country calling code), default 33\n"
		"  --duration SECONDS       exit after this long, default 10\n"
		"  --register yes|no        send REGISTER, default yes; 'no' also sets\n"
		"                           [sip] subscribe_presence_only_when_registered=0\n"
		"  --workdir DIR            where config/db files go (created); default: a new /tmp dir\n"
		"  --log-level LEVEL        liblinphone logs on stderr: none|error|warning|message|debug (default none)\n"
		"  --subscribe-when-registered-only yes|no  override [sip] subscribe_presence_only_when_registered\n"
		"  --user-agent UA          User-Agent, split at the first '/' into name and version for\n"
		"                           linphone_core_set_user_agent(); default 'Linphone/5.1.65 (belle-sip/5.1.64)'\n"
		"                           (what linphonec 5.1.65 sends);\n"
		"                           'none' leaves liblinphone's default ('User-Agent: Unknown')\n"
		"  --proxy-after-friends    (experiment) add the proxy config after the friends\n"
		"  --add-later S:NUMBER     add a friend S seconds after start (address-book change); repeatable\n"
		"  --publish ACTIVITY       PUBLISH our presence: online|away|busy|on-the-phone|meeting|vacation\n"
		"                           (linphone_core_set_presence_model; the proxy config publishes)\n"
		"  --note TEXT              with --publish: a note (xml:lang en)\n"
		"  --rich                   print RICH lines (activity, capabilities, timestamp, note)\n"
		"  --spec SPEC              linphone_core_set_linphone_specs_list (capabilities announced in the\n"
		"                           REGISTER Contact, e.g. groupchat/1.1, lime, ephemeral/1.1); repeatable\n"
		"stdout: PRESENCE <number> <open|closed|none> <contact|-> <t_ms>, then FINAL lines at exit.\n",
		argv0);
}

static int write_file(const char *path, const char *content) {
	FILE *f = fopen(path, "w");
	if (!f) return -1;
	fputs(content, f);
	return fclose(f);
}

int main(int argc, char **argv) {
	const char *server = NULL, *transport = "udp", *identity = "sip:alice@example.org";
	const char *rls = "sip:rls@example.org", *dial_prefix = "33", *workdir = NULL;
	const char *log_level = "none", *only_registered = NULL;
	/* linphonec 5.1.65 announces "Linphone/5.1.65 (belle-sip/5.1.64)"; a bare
	 * liblinphone core that never calls linphone_core_set_user_agent() sends
	 * "User-Agent: Unknown". */
	const char *user_agent = "Linphone/5.1.65 (belle-sip/5.1.64)";
	double duration = 10;
	int proxy_after_friends = 0; /* test of the ordering requirement only */
	/* --add-later SECONDS:NUMBER: address-book change while subscribed. */
	enum { MAX_LATER = 16 };
	double later_at[MAX_LATER];
	const char *later_num[MAX_LATER];
	int n_later = 0, later_done = 0;
	int do_register = 1;
	const char *password = NULL; /* --password: digest credentials for the identity */
	/* --publish ACTIVITY [--note TEXT] [--spec SPEC]...: publish our own presence. */
	const char *publish = NULL, *note = NULL;
	enum { MAX_SPECS = 8 };
	const char *specs[MAX_SPECS];
	int n_specs = 0;

	clock_gettime(CLOCK_MONOTONIC, &g_start);
	setvbuf(stdout, NULL, _IOLBF, 0);

	static const struct option opts[] = {
		{"server", required_argument, 0, 's'},
		{"transport", required_argument, 0, 't'},
		{"identity", required_argument, 0, 'i'},
		{"rls", required_argument, 0, 'r'},
		{"dial-prefix", required_argument, 0, 'p'},
		{"duration", required_argument, 0, 'd'},
		{"register", required_argument, 0, 'R'},
		{"password", required_argument, 0, 'P'},
		{"workdir", required_argument, 0, 'w'},
		{"log-level", required_argument, 0, 'l'},
		{"subscribe-when-registered-only", required_argument, 0, 'S'},
		{"user-agent", required_argument, 0, 'U'},
		{"proxy-after-friends", no_argument, 0, 'A'},
		{"add-later", required_argument, 0, 'L'},
		{"publish", required_argument, 0, 'B'},
		{"note", required_argument, 0, 'N'},
		{"spec", required_argument, 0, 'C'},
		{"rich", no_argument, 0, 'X'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': server = optarg; break;
		case 't': transport = optarg; break;
		case 'i': identity = optarg; break;
		case 'r': rls = optarg; break;
		case 'p': dial_prefix = optarg; break;
		case 'd': duration = atof(optarg); break;
		case 'R':
			if (strcmp(optarg, "yes") == 0) do_register = 1;
			else if (strcmp(optarg, "no") == 0) do_register = 0;
			else { fprintf(stderr, "--register must be yes or no\n"); return 2; }
			break;
		case 'w': workdir = optarg; break;
		case 'P': password = optarg; break;
		case 'l': log_level = optarg; break;
		case 'S':
			if (strcmp(optarg, "yes") && strcmp(optarg, "no")) { fprintf(stderr, "--subscribe-when-registered-only must be yes or no\n"); return 2; }
			only_registered = optarg;
			break;
		case 'U': user_agent = optarg; break;
		case 'A': proxy_after_friends = 1; break;
		case 'L': {
			const char *colon = strchr(optarg, ':');
			if (!colon || n_later >= MAX_LATER) { fprintf(stderr, "--add-later SECONDS:NUMBER (max %d)\n", MAX_LATER); return 2; }
			later_at[n_later] = atof(optarg);
			later_num[n_later] = colon + 1;
			n_later++;
			break;
		}
		case 'B': publish = optarg; break;
		case 'X': g_rich = 1; break;
		case 'N': note = optarg; break;
		case 'C':
			if (n_specs >= MAX_SPECS) { fprintf(stderr, "--spec: at most %d\n", MAX_SPECS); return 2; }
			specs[n_specs++] = optarg;
			break;
		case 'h': usage(stdout, argv[0]); return 0;
		default: usage(stderr, argv[0]); return 2;
		}
	}
	if (!server || optind >= argc) {
		usage(stderr, argv[0]);
		return 2;
	}
	if (strcmp(transport, "udp") && strcmp(transport, "tcp")) {
		fprintf(stderr, "--transport must be udp or tcp\n");
		return 2;
	}
	/* Loopback only: a literal 127.x.x.x:PORT or [::1]:PORT, nothing that needs DNS. */
	{
		char host[64];
		const char *colon = strrchr(server, ':');
		int ok = 0;
		if (colon && colon != server && (size_t)(colon - server) < sizeof host && atoi(colon + 1) > 0) {
			memcpy(host, server, (size_t)(colon - server));
			host[colon - server] = '\0';
			struct in_addr a4;
			if (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) ok = 1;
			if (strcmp(host, "[::1]") == 0) ok = 1;
		}
		if (!ok) {
			fprintf(stderr, "refusing server '%s': use a loopback literal, 127.x.x.x:PORT or [::1]:PORT\n", server);
			return 2;
		}
	}

	char tmpl[] = "/tmp/linphone_smart_client.XXXXXX";
	if (!workdir) {
		workdir = mkdtemp(tmpl);
		if (!workdir) { perror("mkdtemp"); return 1; }
	} else if (mkdir(workdir, 0700) != 0 && errno != EEXIST) {
		perror("mkdir workdir");
		return 1;
	}

	/* ---- logging ---- */
	LinphoneFactory *factory = linphone_factory_get();
	LinphoneLoggingService *ls = linphone_logging_service_get();
	LinphoneLoggingServiceCbs *lscbs = linphone_factory_create_logging_service_cbs(factory);
	linphone_logging_service_cbs_set_log_message_written(lscbs, on_log);
	linphone_logging_service_add_callbacks(ls, lscbs);
	if (strcmp(log_level, "none") == 0) g_log_threshold = 0;
	else if (strcmp(log_level, "error") == 0) g_log_threshold = 1;
	else if (strcmp(log_level, "warning") == 0) g_log_threshold = 2;
	else if (strcmp(log_level, "message") == 0) g_log_threshold = 3;
	else if (strcmp(log_level, "debug") == 0) g_log_threshold = 4;
	else { fprintf(stderr, "--log-level must be none|error|warning|message|debug\n"); return 2; }
	/* Message level is always needed for the compact SIP/subscription trace. */
	linphone_logging_service_set_log_level(ls, g_log_threshold >= 4 ? LinphoneLogLevelDebug : LinphoneLogLevelMessage);

	/* ---- config file, written before the core reads it ---- */
	char path_rc[4096], path_db[4096], buf[16384];
	snprintf(path_rc, sizeof path_rc, "%s/linphonerc", workdir);
	snprintf(path_db, sizeof path_db, "%s/linphone.db", workdir);
	/* Start from scratch (precaution: liblinphone can store friend lists in
	 * linphone.db; after our runs its friend tables were found empty). */
	unlink(path_db);
	/* Capabilities in [sip] linphone_specs too (read at core start). */
	char specs_csv[512] = "";
	for (int i = 0; i < n_specs; i++)
		snprintf(specs_csv + strlen(specs_csv), sizeof specs_csv - strlen(specs_csv), "%s%s", i ? "," : "", specs[i]);
	int sub_only_reg = only_registered ? strcmp(only_registered, "yes") == 0 : do_register;
	snprintf(buf, sizeof buf,
		"[sip]\n"
		"subscribe_presence_only_when_registered=%d\n"
		"%s%s%s"
		"[sound]\n"
		"echocancellation=0\n"
		"[video]\n"
		"capture=0\n"
		"display=0\n"
		"automatically_initiate=0\n"
		"automatically_accept=0\n"
		"[storage]\n"
		"uri=%s\n"
		"[misc]\n"
		"config-uri=\n"
		"version_check_url_root=\n"
		"[net]\n"
		"firewall_policy=0\n",
		sub_only_reg, n_specs ? "linphone_specs=" : "", specs_csv, n_specs ? "\n" : "", path_db);
	if (write_file(path_rc, buf) != 0) { perror("write linphonerc"); return 1; }
	linphone_factory_set_data_dir(factory, workdir);
	linphone_factory_set_config_dir(factory, workdir);
	linphone_factory_set_download_dir(factory, workdir);

	/* ---- core ---- */
	LinphoneCore *lc = linphone_factory_create_core_3(factory, path_rc, NULL, NULL);
	if (!lc) { fprintf(stderr, "linphone_factory_create_core_3 failed\n"); return 1; }
	if (strcmp(user_agent, "none") != 0) {
		char uaname[256];
		snprintf(uaname, sizeof uaname, "%s", user_agent);
		char *slash = strchr(uaname, '/');
		if (slash) *slash = '\0';
		linphone_core_set_user_agent(lc, uaname, slash ? slash + 1 : NULL);
	}
	LinphoneCoreCbs *cbs = linphone_factory_create_core_cbs(factory);
	linphone_core_cbs_set_global_state_changed(cbs, on_global_state);
	linphone_core_cbs_set_registration_state_changed(cbs, on_registration);
	linphone_core_cbs_set_subscription_state_changed(cbs, on_subscription_state);
	linphone_core_cbs_set_notify_received(cbs, on_notify);
	linphone_core_cbs_set_notify_presence_received(cbs, on_presence_friend);
	linphone_core_cbs_set_notify_presence_received_for_uri_or_tel(cbs, on_presence_uri_or_tel);
	linphone_core_add_callbacks(lc, cbs);

	/* No media: files instead of sound cards, no video. */
	linphone_core_set_use_files(lc, TRUE);
	linphone_core_enable_video_capture(lc, FALSE);
	linphone_core_enable_video_display(lc, FALSE);

	/* Local SIP port: random, only for the chosen transport. */
	LinphoneTransports *tr = linphone_factory_create_transports(factory);
	linphone_transports_set_udp_port(tr, strcmp(transport, "udp") == 0 ? LC_SIP_TRANSPORT_RANDOM : LC_SIP_TRANSPORT_DISABLED);
	linphone_transports_set_tcp_port(tr, strcmp(transport, "tcp") == 0 ? LC_SIP_TRANSPORT_RANDOM : LC_SIP_TRANSPORT_DISABLED);
	linphone_transports_set_tls_port(tr, LC_SIP_TRANSPORT_DISABLED);
	linphone_transports_set_dtls_port(tr, LC_SIP_TRANSPORT_DISABLED);
	linphone_core_set_transports(lc, tr);
	linphone_transports_unref(tr);

	/* Capabilities: liblinphone 5.1 announces them in its REGISTER Contact
	 * (+org.linphone.specs="..."), not in its PUBLISH body. */
	if (n_specs > 0) {
		bctbx_list_t *sl = NULL;
		for (int i = 0; i < n_specs; i++) sl = bctbx_list_append(sl, (void *)specs[i]);
		linphone_core_set_linphone_specs_list(lc, sl);
		bctbx_list_free(sl);
	}
	if (linphone_core_start(lc) != 0) { fprintf(stderr, "linphone_core_start failed\n"); return 1; }
	if (publish) {
		LinphonePresenceActivityType act;
		LinphonePresenceModel *pm;
		if (strcmp(publish, "online") == 0) {
			pm = linphone_presence_model_new();
			linphone_presence_model_set_basic_status(pm, LinphonePresenceBasicStatusOpen);
			if (note) linphone_presence_model_add_note(pm, note, "en");
		} else if (activity_of(publish, &act)) {
			pm = note ? linphone_presence_model_new_with_activity_and_note(act, NULL, note, "en")
				: linphone_presence_model_new_with_activity(act, NULL);
		} else {
			fprintf(stderr, "--publish: unknown activity %s\n", publish);
			return 2;
		}
		linphone_core_set_presence_model(lc, pm);
		linphone_presence_model_unref(pm);
		elog("publishing activity %s note %s, %d spec(s)", publish, note ? note : "-", n_specs);
	}

	/* ---- proxy config with route and dial prefix, created before the friends like the
	 * app does (README: the order does not matter as long as both exist before the
	 * first linphone_core_iterate(); --proxy-after-friends tests that) ---- */
	LinphoneProxyConfig *cfg = NULL;
	if (!proxy_after_friends) {
		cfg = add_proxy(lc, factory, identity, server, transport, dial_prefix, do_register, publish != NULL);
		if (cfg && password) add_credentials(lc, factory, identity, password);
		if (!cfg) return 2;
	}

	/* ---- friend list with RLS URI ---- */
	LinphoneFriendList *fl = linphone_core_create_friend_list(lc);
	linphone_friend_list_set_display_name(fl, "smart-contacts");
	linphone_friend_list_set_rls_uri(fl, rls);
	LinphoneFriendListCbs *flcbs = linphone_factory_create_friend_list_cbs(factory);
	linphone_friend_list_cbs_set_presence_received(flcbs, on_list_presence);
	linphone_friend_list_add_callbacks(fl, flcbs);
	linphone_core_add_friend_list(lc, fl);

	g_tracked = calloc((size_t)(argc - optind + n_later), sizeof *g_tracked);
	for (int i = optind; i < argc; i++) add_friend(lc, fl, argv[i]);
	if (proxy_after_friends) {
		cfg = add_proxy(lc, factory, identity, server, transport, dial_prefix, do_register, publish != NULL);
		if (cfg && password) add_credentials(lc, factory, identity, password);
		if (!cfg) return 2;
	}
	linphone_friend_list_enable_subscriptions(fl, TRUE);
	linphone_friend_list_update_subscriptions(fl);
	elog("started: server=%s transport=%s identity=%s rls=%s dial-prefix=%s register=%s "
		"subscribe_presence_only_when_registered=%d workdir=%s numbers=%d",
		server, transport, identity, rls, dial_prefix, do_register ? "yes" : "no", sub_only_reg, workdir, g_ntracked);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	long long end_ms = (long long)(duration * 1000.0);
	while (!g_stop && now_ms() < end_ms) {
		while (later_done < n_later && now_ms() >= (long long)(later_at[later_done] * 1000.0)) {
			elog("address-book change: adding friend %s", later_num[later_done]);
			add_friend(lc, fl, later_num[later_done]);
			later_done++;
			/* Needed: linphone_friend_list_add_friend() alone does not re-subscribe
			 * (nothing was sent in the following 4 s). */
			linphone_friend_list_update_subscriptions(fl);
		}
		linphone_core_iterate(lc);
		check_changes("iterate poll");
		poll_friend_sub_states();
		usleep(20000);
	}

	for (int i = 0; i < g_ntracked; i++) {
		Tracked *t = &g_tracked[i];
		const char *basic;
		char *contact;
		read_state(t, &basic, &contact);
		if (strcmp(basic, "open") == 0 && contact && contact[0])
			printf("FINAL %s USER %s\n", t->number, contact);
		else
			printf("FINAL %s NOTUSER\n", t->number);
		if (contact) bctbx_free(contact);
	}
	fflush(stdout);

	/* Orderly shutdown: lets liblinphone unsubscribe / unregister. */
	elog("stopping core");
	linphone_core_stop_async(lc);
	for (int i = 0; i < 100 && linphone_core_get_global_state(lc) != LinphoneGlobalOff; i++) {
		linphone_core_iterate(lc);
		usleep(20000);
	}
	for (int i = 0; i < g_ntracked; i++) {
		linphone_friend_unref(g_tracked[i].fr);
		free(g_tracked[i].last_contact);
		free(g_tracked[i].last_rich);
	}
	free(g_tracked);
	linphone_friend_list_cbs_unref(flcbs);
	linphone_friend_list_unref(fl);
	linphone_proxy_config_unref(cfg);
	linphone_core_cbs_unref(cbs);
	linphone_core_unref(lc);
	linphone_logging_service_cbs_unref(lscbs);
	elog("done");
	return 0;
}
