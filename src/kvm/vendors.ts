// The vendor module a profile names, mapped to its rules.
import { pvmOps } from '../pvm/pvm-ops.js';
import { svmOps } from '../svm/svm-ops.js';
import { vmxOps } from '../vmx/vmx-ops.js';
import type { VendorModule } from './profile.js';
import type { VendorOps } from './vendor.js';

export function vendorFor(module: VendorModule): VendorOps {
  switch (module) {
    case 'kvm_pvm':
      return pvmOps;
    case 'kvm_amd':
      return svmOps;
    case 'kvm_intel':
      return vmxOps;
    default:
      throw new Error(`kvmsr has no vendor model for ${String(module)}`);
  }
}
