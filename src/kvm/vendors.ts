// The vendor module a profile names, mapped to its rules.
import { pvmOps } from '../pvm/pvm-ops.js';
import { svmOps } from '../svm/svm-ops.js';
import type { VendorModule } from './profile.js';
import type { VendorOps } from './vendor.js';

export function vendorFor(module: VendorModule): VendorOps {
  switch (module) {
    case 'kvm_pvm':
      return pvmOps;
    case 'kvm_amd':
      return svmOps;
    default:
      // The VMX and SVM models are the MSR-semantics issue's work; until they land, a profile from
      // such a host is refused rather than answered with the wrong vendor's rules.
      throw new Error(`kvmsr has no ${module} vendor model yet (only kvm_pvm)`);
  }
}
