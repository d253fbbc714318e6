// Package e2e holds the end-to-end tests: the real oslogin-agent and
// oslogin-emulator binaries, real OpenSSH sshd instances on 127.0.0.1 whose
// AuthorizedKeysCommand asks the emulator's VM side for keys, and the stock
// ssh, scp, sftp, ssh-add, ssh-keygen, git, rsync and ansible-playbook
// programs talking through the agent. Nothing here reaches beyond loopback.
//
// The package has no code outside its tests.
package e2e
