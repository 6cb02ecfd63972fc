# Helpers shared by the launch/ scripts; sourced by them, not run.

# Prints the launching script's header comment (from line 2 to the first
# blank line) without its "# " prefixes: that comment is the usage text.
print_usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
}

# Prints an error and a pointer to the usage text, then exits with status 2.
die_usage() {
  printf '%s: error: %s\n' "$(basename "$0")" "$1" >&2
  printf 'Run %s -h for usage.\n' "$0" >&2
  exit 2
}

# Prints the value of a --name=VALUE option; dies when it has none.
option_value() {
  [[ $1 == *=* ]] || die_usage "option $1 needs a value: $1=VALUE"
  printf '%s' "${1#*=}"
}

# Prints one word quoted for a POSIX shell: bare when that is safe, otherwise
# in single quotes (a ' inside becomes '\'').
shell_quote() {
  local word=$1 quote="'"
  if [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//$quote/$quote\\$quote$quote}"
  fi
}

# Prints a command line, each word quoted as shell_quote does, on one line.
shell_join() {
  local line="" word
  for word in "$@"; do
    line+="${line:+ }$(shell_quote "$word")"
  done
  printf '%s\n' "$line"
}

# Sets config and workdir from the two positional arguments ("${positional[@]}")
# and checks them and --mode; dies with a usage error otherwise.
set_config_workdir_and_check_mode() {
  ((${#positional[@]} == 2)) || die_usage "expected CONFIG and WORKDIR, got ${#positional[@]} arguments"
  config=${positional[0]}
  workdir=${positional[1]}
  case "$mode" in
    train | train_lstm | eval) ;;
    *) die_usage "unknown --mode=$mode (train, train_lstm or eval)" ;;
  esac
}
