# Stand-ins for OpenWrt's rc.common / procd.sh / functions.sh, for testing
# init.d/cthelperd off the router. POSIX sh (run under busybox ash).
#
#   procd-standins.sh INIT CONF ACTION
#
# Sources INIT as rc.common does (after defining the stand-ins), sets CONF (the
# init script's UCI file path; "-" keeps the script's own), runs ACTION
# (start | reload | triggers | vars) and records every procd call, one per
# line, on stdout; each argument in [brackets] so that word boundaries show.
# FAKE_RUNNING=1 makes procd_running succeed. FAKE_MODULES is the init script's
# /sys/module (default: a directory that does not exist, so no module is loaded),
# FAKE_CAPS its /etc/capabilities/cthelperd.json (default: none).
#
# uci_load_validate reads CONF with a small UCI parser and checks the datatypes
# the init script uses (bool, uinteger, port, range(a,b), or("lit",...),
# list(type), string) with the semantics of /sbin/validate_data: a missing or empty option
# takes the default, a valid one is set (bools as 0/1, lists space-joined), an
# invalid one is unset and makes the result non-zero; without a section name it
# describes the schema instead (recorded as a "schema" line).

rec() {
	_rec_line=$1
	shift
	for _rec_a in "$@"; do _rec_line="$_rec_line [$_rec_a]"; done
	printf '%s\n' "$_rec_line"
}

# --- procd.sh ---------------------------------------------------------------
procd_open_instance() { rec open_instance "$@"; }
procd_set_param() { rec set_param "$@"; }
procd_append_param() { rec append_param "$@"; }
procd_close_instance() { rec close_instance "$@"; }
procd_add_jail() { rec add_jail "$@"; }
procd_add_reload_trigger() { rec reload_trigger "$@"; }
procd_add_validation() { rec validation_begin; "$@"; rec validation_end; }
procd_send_signal() { rec send_signal "$@"; }
procd_kill() { rec kill "$@"; }
procd_running() { rec running "$@"; [ "${FAKE_RUNNING:-0}" = 1 ]; }
# busybox logger: recorded like a procd call
logger() { rec logger "$@"; }

# rc.common with USE_PROCD: start = procd_open_service; start_service;
# procd_close_service (which runs service_triggers).
start() {
	rec open_service cthelperd
	start_service "$@"
	_start_rc=$?
	service_triggers
	rec close_service "start_service=$_start_rc"
}

# --- a small UCI reader ------------------------------------------------------
_uci_loaded=
_uci_parse() {
	[ -n "$_uci_loaded" ] && return 0
	_uci_loaded=1
	_S_count=0
	_uci_cur=
	while IFS= read -r _uci_line || [ -n "$_uci_line" ]; do
		# shell word splitting and quoting are close enough to UCI's
		eval "set -- $_uci_line" || { echo "uci parse error: $_uci_line" >&2; return 1; }
		[ $# -eq 0 ] && continue
		case "$1" in
		config)
			_S_count=$((_S_count + 1))
			_uci_cur=${3:-cfg$_S_count}
			eval "_S_type_$_S_count=\$2; _S_name_$_S_count=\$_uci_cur; _S_has_$_uci_cur=1"
			;;
		option)
			eval "_O_${_uci_cur}_$2=\$3"
			;;
		list)
			eval "_O_${_uci_cur}_$2=\"\${_O_${_uci_cur}_$2:+\$_O_${_uci_cur}_$2
}\$3\""
			;;
		package) ;;
		*) echo "uci parse error: $_uci_line" >&2; return 1 ;;
		esac
	done < "$CONF"
}

# functions.sh
config_load() {
	[ "$1" = cthelperd ] || { echo "config_load: unexpected package $1" >&2; return 1; }
	_uci_parse
}
config_foreach() {
	_cf_fn=$1 _cf_type=$2 _cf_i=1
	shift 2
	while [ "$_cf_i" -le "${_S_count:-0}" ]; do
		eval "_cf_t=\$_S_type_$_cf_i; _cf_n=\$_S_name_$_cf_i"
		[ "$_cf_t" = "$_cf_type" ] && "$_cf_fn" "$_cf_n" "$@"
		_cf_i=$((_cf_i + 1))
	done
}

# one value against one datatype; prints the exported value
_dt_check() {
	case "$1" in
	list\(*)
		_dt_l=${1#list(}
		_dt_l=${_dt_l%)}
		_dt_ifs=$IFS
		IFS=' 	'
		for _dt_w in $2; do
			_dt_check "$_dt_l" "$_dt_w" >/dev/null || { IFS=$_dt_ifs; return 1; }
		done
		IFS=$_dt_ifs
		[ -n "$2" ] && echo "$2"
		;;
	bool)
		case "$2" in
		0 | off | false | no | disabled) echo 0 ;;
		1 | on | true | yes | enabled) echo 1 ;;
		*) return 1 ;;
		esac
		;;
	uinteger)
		case "$2" in '' | *[!0-9]*) return 1 ;; esac
		echo "$2"
		;;
	port)
		case "$2" in '' | *[!0-9]*) return 1 ;; esac
		[ "$2" -le 65535 ] || return 1
		echo "$2"
		;;
	range\(*)
		_dt_r=${1#range(}
		_dt_r=${_dt_r%)}
		case "$2" in '' | *[!0-9]*) return 1 ;; esac
		[ "$2" -ge "${_dt_r%%,*}" ] && [ "$2" -le "${_dt_r#*,}" ] || return 1
		echo "$2"
		;;
	or\(*)
		_dt_r=${1#or(}
		_dt_r=${_dt_r%)}
		_dt_ifs=$IFS
		IFS=,
		for _dt_lit in $_dt_r; do
			_dt_lit=${_dt_lit#\"}
			_dt_lit=${_dt_lit%\"}
			if [ "$_dt_lit" = "$2" ]; then IFS=$_dt_ifs; echo "$2"; return 0; fi
		done
		IFS=$_dt_ifs
		return 1
		;;
	string)
		echo "$2"
		;;
	*)
		echo "stand-in: unsupported datatype $1" >&2
		return 2
		;;
	esac
}

uci_load_validate() {
	local _package="$1" _type="$2" _name="$3" _function="$4" _option _result=0
	local _opt _expr _def _val _out _one _ifs
	shift 4
	if [ -z "$_name" ]; then
		rec schema "$_package" "$_type" "$@"
		return 0
	fi
	for _option in "$@"; do
		eval "local ${_option%%:*}"
	done
	_uci_parse || return 1
	for _option in "$@"; do
		_opt=${_option%%:*}
		_expr=${_option#*:}
		_def=
		case "$_expr" in *:*) _def=${_expr#*:} _expr=${_expr%%:*} ;; esac
		eval "_val=\${_O_${_name}_$_opt-}"
		if [ -z "$_val" ]; then
			if [ -n "$_def" ]; then eval "$_opt=\$_def"; else unset -v "$_opt"; fi
			continue
		fi
		_out=
		_ifs=$IFS
		IFS='
'
		for _one in $_val; do
			if _one=$(_dt_check "$_expr" "$_one"); then
				_out="${_out:+$_out }$_one"
			else
				_out=
				_result=1
				break
			fi
		done
		IFS=$_ifs
		if [ -n "$_out" ]; then eval "$_opt=\$_out"; else unset -v "$_opt"; fi
	done
	[ -n "$_function" ] || return $_result
	eval "$_function \"\$_name\" \"\$_result\""
}

# --- run ---------------------------------------------------------------------
_init=$1 _conf=$2 _action=$3
. "$_init"
[ "$_conf" = - ] || CONF=$_conf
# kernel modules: FAKE_MODULES (a directory of module directories), never the host's
MODULES=${FAKE_MODULES:-/nonexistent/sys/module}
# the capabilities file: FAKE_CAPS (default: none, so no jail)
CAPS=${FAKE_CAPS:-/nonexistent/cthelperd.json}

case "$_action" in
start) start ;;
reload) reload_service ;;
triggers) service_triggers ;;
vars) rec vars "START=$START" "STOP=$STOP" "USE_PROCD=$USE_PROCD" "PROG=$PROG" "CONF=$CONF" ;;
*) echo "unknown action $_action" >&2; exit 2 ;;
esac
