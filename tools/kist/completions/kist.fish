# fish completion for kist(1): the commands, then container or image names.
set -l kist_cmds pull images rmi run create start stop restart kill rm pause unpause ps exec cp stats logs port inspect system version help
complete -c kist -f -n "not __fish_seen_subcommand_from $kist_cmds" -a "$kist_cmds"
complete -c kist -f -n "__fish_seen_subcommand_from start stop restart kill rm pause unpause exec stats logs port inspect" -a "(ctr-list -a --format '{{.Names}}' 2>/dev/null)"
complete -c kist -f -n "__fish_seen_subcommand_from run create rmi pull" -a "(img-list --format '{{.Repository}}:{{.Tag}}' 2>/dev/null)"
complete -c kist -f -n "__fish_seen_subcommand_from system" -a prune
