# bash completion for kist(1): the commands, then container names for the
# commands that take them (from ctr-list), image names for run/rmi (img-list).
_kist() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local cmds="pull images rmi run create start stop restart kill rm pause unpause ps exec cp stats logs port inspect system version help"
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "$cmds" -- "$cur")
        return
    fi
    case ${COMP_WORDS[1]} in
        start|stop|restart|kill|rm|pause|unpause|exec|stats|logs|port|inspect)
            mapfile -t COMPREPLY < <(compgen -W "$(ctr-list -a --format '{{.Names}}' 2>/dev/null)" -- "$cur") ;;
        run|create|rmi|pull)
            mapfile -t COMPREPLY < <(compgen -W "$(img-list --format '{{.Repository}}:{{.Tag}}' 2>/dev/null)" -- "$cur") ;;
        system) mapfile -t COMPREPLY < <(compgen -W "prune" -- "$cur") ;;
        help) mapfile -t COMPREPLY < <(compgen -W "$cmds" -- "$cur") ;;
    esac
}
complete -o default -F _kist kist
