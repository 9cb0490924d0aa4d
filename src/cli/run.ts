// `kvmsr run [--profile P] [--record FILE] [--intercept seccomp|preload] -- COMMAND...`: the
// command's /dev/kvm is kvmsr.
import { Option, type Command } from 'commander';
import { chooseIntercept, INTERCEPTS, type Intercept } from '../run/intercept.js';
import { preloadLibrary, seccompBroker } from '../run/preload-lib.js';
import { runUnderKvmsr } from '../run/run-command.js';
import { CliError } from './common.js';
import { KERNEL_HELP, loadProfile, PROFILE_HELP, profileFromOptions } from './profile-option.js';

/**
 * Registers `run`. Its status is the command's, set on process.exitCode when the command ends
 * (main() returns before then: the server answers on the event loop meanwhile).
 */
export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a command (a VMM or a test program) whose /dev/kvm is kvmsr, through an LD_PRELOAD library or seccomp')
    .option('--profile <file>', PROFILE_HELP)
    .option('--kernel <release>', KERNEL_HELP)
    .option('--record <file>', 'also write its MSR ioctls to a capture (the format of kvmsr record, the profile in its header)')
    .option('--trace', 'print every KVM call the command makes and what kvmsr answered, on stderr')
    .addOption(
      new Option('--intercept <how>', 'how its KVM calls reach kvmsr: an LD_PRELOAD library, or seccomp user notification (static binaries, raw syscalls; Linux 5.14); default: seccomp for a static ELF, else preload').choices([
        ...INTERCEPTS,
      ]),
    )
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .action((command: string[], o: { profile?: string; kernel?: string; record?: string; trace?: boolean; intercept?: Intercept }) => {
      if (command.length === 0) throw new CliError('give the command to run after --, e.g. kvmsr run -- ./my-vmm-test');
      const profile = profileFromOptions(o) ?? loadProfile(undefined);
      const intercept = o.intercept ?? chooseIntercept(command);
      const native: { library?: string; broker?: string } = {};
      try {
        if (intercept === 'seccomp') native.broker = seccompBroker();
        else native.library = preloadLibrary();
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      runUnderKvmsr(command, { profile, intercept, ...native, trace: !!o.trace, ...(o.record !== undefined ? { record: o.record } : {}) }).then(
        (r) => {
          process.exitCode = r.status;
        },
        (e: unknown) => {
          process.stderr.write(`kvmsr: ${(e as Error).message}\n`);
          process.exitCode = 2;
        },
      );
    });
}
