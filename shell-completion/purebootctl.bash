# SPDX-License-Identifier: MIT
# bash completion for purebootctl(1)

__purebootctl_objects() {
        # Node host names, session names and backend names from the controller; quietly nothing if it is down.
        purebootctl --no-legend --no-pager "$1" list 2>/dev/null | awk -v col="$2" '{ print $col }'
}

_purebootctl() {
        local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
        local group="" verb="" i
        local -A verbs=(
                [node]='add list show remove set-mode token'
                [clone]='create list show start cancel delete status update token plan add-target'
                [image]='list show capture deploy verify rename describe delete export import capture-local restore-local'
                [storage]='add list show remove update'
                [ca]='show list-issued revoke issue'
                [boot-media]='write'
        )
        local options='--help --version --no-pager --no-legend --no-ask-password --json='

        for ((i = 1; i < COMP_CWORD; i++)); do
                case ${COMP_WORDS[i]} in
                        -*) ;;
                        *) if [[ -z $group ]]; then group=${COMP_WORDS[i]}; elif [[ -z $verb ]]; then verb=${COMP_WORDS[i]}; fi ;;
                esac
        done

        case $prev in
                --json) COMPREPLY=($(compgen -W 'pretty short off' -- "${cur#=}")); return ;;
                --mode) COMPREPLY=($(compgen -W 'direct staged' -- "$cur")); return ;;
                --resize) COMPREPLY=($(compgen -W 'none shrink_source grow_target' -- "$cur")); return ;;
                --identity) COMPREPLY=($(compgen -W 'auto none' -- "$cur")); return ;;
                --unused) COMPREPLY=($(compgen -W 'discard zero keep' -- "$cur")); return ;;
                --role) COMPREPLY=($(compgen -W 'node source target server' -- "$cur")); return ;;
                --type) COMPREPLY=($(compgen -W 'nfs iscsi' -- "$cur")); return ;;
                --arch) COMPREPLY=($(compgen -W 'x86_64 arm64 armhf riscv64' -- "$cur")); return ;;
                --source|--target) COMPREPLY=($(compgen -W "$(__purebootctl_objects node 2)" -- "$cur")); return ;;
                --storage) COMPREPLY=($(compgen -W "$(__purebootctl_objects storage 2)" -- "$cur")); return ;;
                --csr) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        esac

        if [[ $cur == -* ]]; then
                case $group/$verb in
                        node/add) options+=' --mac --hostname --arch --serial' ;;
                        clone/create|clone/update) options+=' --source --target --mode --storage --source-device --target-device --name --resize --identity --unused --idempotency-key --keep-as' ;;
                        image/capture) options+=' --source --source-device --storage' ;;
                        image/import|image/capture-local) options+=' --storage --description' ;;
                        image/deploy) options+=' --target --target-device --resize --name --identity --unused --idempotency-key' ;;
                        clone/status) options+=' --follow' ;;
                        clone/token) options+=' --role --target' ;;
                        storage/add) options+=' --type' ;;
                        ca/issue) options+=' --csr --role --ip' ;;
                        boot-media/write) options+=' --server' ;;
                esac
                COMPREPLY=($(compgen -W "$options" -- "$cur"))
        elif [[ -z $group ]]; then
                COMPREPLY=($(compgen -W "${!verbs[*]}" -- "$cur"))
        elif [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "${verbs[$group]}" -- "$cur"))
        else
                case $group/$verb in
                        node/show|node/remove|node/set-mode|node/token) COMPREPLY=($(compgen -W "$(__purebootctl_objects node 2)" -- "$cur")) ;;
                        clone/*) COMPREPLY=($(compgen -W "$(__purebootctl_objects clone 1)" -- "$cur")) ;;
                        storage/show|storage/remove|storage/update) COMPREPLY=($(compgen -W "$(__purebootctl_objects storage 2)" -- "$cur")) ;;
                        image/*) COMPREPLY=($(compgen -W "$(__purebootctl_objects image 2)" -- "$cur")) ;;
                        boot-media/write) COMPREPLY=($(compgen -f -- "$cur")) ;;
                esac
        fi
}

complete -F _purebootctl purebootctl
