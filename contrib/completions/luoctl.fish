# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_luoctl_global_optspecs
    string join \n socket= json V/version h/help
end

function __fish_luoctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_luoctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_luoctl_using_subcommand
    set -l cmd (__fish_luoctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c luoctl -n "__fish_luoctl_needs_command" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_needs_command" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_needs_command" -s V -l version -d 'Print the version'
complete -c luoctl -n "__fish_luoctl_needs_command" -s h -l help -d 'Print help'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "status" -d 'The agent\'s state, your sessions, quota and usage'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "sessions" -d 'List sessions (yours; every uid\'s for root)'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "show" -d 'A session and its files'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "update" -d 'A live update: emulated, or with --kexec a kernel live update'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "handover" -d 'Hand over an outgoing session by name'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "finish" -d 'Retrieve and finish an incoming session by name, discarding files nobody retrieved'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "abort" -d 'Abort an open session or discard a waiting one, by name'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "agent" -d 'Operate the agent itself'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "run" -d 'Run a service under supervision, in the foreground'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "restart" -d 'Restart a service run by `luoctl run`, optionally with a new command'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "services" -d 'Services run by `luoctl run`: command, pid, state, listeners, fd store'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "exec-service" -d 'The trampoline of `luoctl run` (internal)'
complete -c luoctl -n "__fish_luoctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c luoctl -n "__fish_luoctl_using_subcommand status" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand status" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand sessions" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand sessions" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand sessions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand show" -l owner -d 'Act on another uid\'s session (root only): a uid or a user name from /etc/passwd' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand show" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand show" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l kernel -d 'The kernel image to boot (a bzImage)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l initrd -d 'The initramfs to boot with it' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l append -d 'The new kernel\'s command line' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l kexec -d 'A kernel live update (kernel backend, root): a preflight, then kexec into FILE'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l reuse-cmdline -d 'The current command line, from /proc/cmdline (the default)'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l dry-run -d 'Print the preflight only'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l force -d 'Go ahead although files would be lost'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand handover" -l owner -d 'Act on another uid\'s session (root only): a uid or a user name from /etc/passwd' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand handover" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand handover" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand handover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand finish" -l owner -d 'Act on another uid\'s session (root only): a uid or a user name from /etc/passwd' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand finish" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand finish" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand finish" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand abort" -l owner -d 'Act on another uid\'s session (root only): a uid or a user name from /etc/passwd' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand abort" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand abort" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand abort" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and not __fish_seen_subcommand_from upgrade help" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and not __fish_seen_subcommand_from upgrade help" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and not __fish_seen_subcommand_from upgrade help" -s h -l help -d 'Print help'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and not __fish_seen_subcommand_from upgrade help" -f -a "upgrade" -d 'Re-execute luod in place (same pid), keeping every session, file and connection'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and not __fish_seen_subcommand_from upgrade help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from upgrade" -l binary -d 'The luod binary to re-execute as (default: the binary at the agent\'s own path)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from upgrade" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from upgrade" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from upgrade" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "upgrade" -d 'Re-execute luod in place (same pid), keeping every session, file and connection'
complete -c luoctl -n "__fish_luoctl_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l listen -d 'A listener, passed to every instance (repeatable, in order): tcp:HOST:PORT, udp:HOST:PORT or unix:PATH, with FDNAME= for its name in LISTEN_FDNAMES (default: NAME)' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l mode -d 'How a restart replaces the running instance: overlap (start the new, wait until it is ready, stop the old) or stop-start' -r -f -a "overlap\t'Start the new instance, wait until it is ready, then stop the old'
stop-start\t'Stop the old instance, then start the new'"
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l ready -d 'When an instance is ready: notify (it sends READY=1) or after:DURATION (it still runs after DURATION, e.g. after:500ms)' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l ready-timeout -d 'How long an instance may take to become ready (EXTEND_TIMEOUT_USEC= extends it)' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l stop-signal -d 'The signal that stops an instance (sent to its process group)' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l stop-timeout -d 'How long after the stop signal SIGKILL follows' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l restart -d 'on-failure: start a failed service again, with back-off; no: exit with the service\'s status' -r -f -a "on-failure\t'Start it again, with back-off'
no\t'Exit with the service\'s status'"
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l notify-access -d 'Who may send notifications: main (the main pid) or all (any process of the service\'s process group)' -r -f -a "main\t'The main process only'
all\t'Any process of the service\'s process group'"
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l watchdog -d 'Watchdog interval: passed as WATCHDOG_USEC; an instance that does not send WATCHDOG=1 within it is aborted (SIGABRT) and counts as failed' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l fdstore-max -d 'Most fds in the service\'s fd store (0 turns it off); fds over the limit are closed with a warning' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand restart" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand restart" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand services" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand services" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand services" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l fds -d 'Inherited descriptors to pass, in order' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l names -d 'Their names, colon-separated' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l notify-socket -d '`NOTIFY_SOCKET`' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l watchdog-usec -d '`WATCHDOG_USEC`' -r
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l socket -d 'luod\'s socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock)' -r -F
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -l json -d 'Print the agent\'s reply as one JSON document on stdout; errors too: {"ok":false,"errno":N,"error":"ENAME","message":"..."}'
complete -c luoctl -n "__fish_luoctl_using_subcommand exec-service" -s h -l help -d 'Print help'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "status" -d 'The agent\'s state, your sessions, quota and usage'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "sessions" -d 'List sessions (yours; every uid\'s for root)'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "show" -d 'A session and its files'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "update" -d 'A live update: emulated, or with --kexec a kernel live update'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "handover" -d 'Hand over an outgoing session by name'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "finish" -d 'Retrieve and finish an incoming session by name, discarding files nobody retrieved'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "abort" -d 'Abort an open session or discard a waiting one, by name'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "agent" -d 'Operate the agent itself'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "run" -d 'Run a service under supervision, in the foreground'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "restart" -d 'Restart a service run by `luoctl run`, optionally with a new command'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "services" -d 'Services run by `luoctl run`: command, pid, state, listeners, fd store'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "exec-service" -d 'The trampoline of `luoctl run` (internal)'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and not __fish_seen_subcommand_from status sessions show update handover finish abort agent run restart services exec-service help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c luoctl -n "__fish_luoctl_using_subcommand help; and __fish_seen_subcommand_from agent" -f -a "upgrade" -d 'Re-execute luod in place (same pid), keeping every session, file and connection'
