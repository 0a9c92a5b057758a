complete -c luod -l socket -d 'Listen on PATH (default: $LUOD_SOCKET, else /run/luod/luod.sock for root and $XDG_RUNTIME_DIR/luod.sock, else /run/user/UID/luod.sock, for other users)' -r -F
complete -c luod -l backend -d 'Which backend keeps the sessions' -r -f -a "auto\t'kernel when the device can be opened, else emulated'
emulated\t'Sessions live in luod\'s memory: they survive a service\'s restart, not a kexec'
kernel\t'The kernel\'s /dev/liveupdate: memfds also survive a kexec'"
complete -c luod -l quota-sessions -d 'At most N sessions per uid (root is exempt)' -r
complete -c luod -l quota-files -d 'At most N preserved files per uid (root is exempt)' -r
complete -c luod -l quota-bytes -d 'At most SIZE bytes of memfd pinned per uid (root is exempt); SIZE is bytes or has a K, M, G or T suffix (powers of 1024)' -r
complete -c luod -l quota-connections -d 'At most N open connections to luod per uid (root is exempt)' -r
complete -c luod -l device -d 'The LUO device of the kernel backend' -r -F
complete -c luod -l keeper -d 'auto: copies of the files of every session a restarted luod takes back (handed over, or persistent) are kept outside luod, so that a crash or restart of luod loses nothing: in systemd\'s fd store when $NOTIFY_SOCKET is set, else in a keeper process that luod starts (it answers at SOCKET.keeper); off: none' -r -f -a "auto\t''
off\t''"
complete -c luod -l kernel-session-files -d 'At most N files per kernel session; an agent session with more spreads over several (default: as many as the kernel takes)' -r
complete -c luod -l registry -d 'Kernel backend, after a refused registry: restore the previous kernel\'s sessions from the registry in FILE (for example registry.rejected, repaired, or rewritten by the luod that reads it) instead of the kernel session luod/registry' -r -F
complete -c luod -l log-level -d 'What to log (default: $LUOD_LOG, else info); logs go to stderr' -r -f -a "error\t'Errors only'
warn\t'Errors and warnings'
info\t'The default: start-up, sessions created, handed over, finished, aborted'
debug\t'Every connection and request'
trace\t'Everything'"
complete -c luod -l upgrade-state -d '`--upgrade-state FD`: this is an in-place upgrade; the state is in this inherited memfd (set by the agent that re-executes, not by people)' -r
complete -c luod -l upgrade-fallback -d '`--upgrade-fallback FD`: the previous binary, to go back to when the state is refused' -r
complete -c luod -l keeper-process -d '`--keeper-process PATH --keeper-link N`: run as the keeper an agent started (not for people); PATH is where it answers a restarted agent' -r -F
complete -c luod -l keeper-link -d 'The inherited connection to the agent that started the keeper' -r
complete -c luod -l upgrade-probe -d '`--upgrade-probe`: print the upgrade state versions this binary reads (what an agent asks before it re-executes as this binary)'
complete -c luod -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luod -s V -l version -d 'Print version'
