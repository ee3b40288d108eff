// SPDX-License-Identifier: MIT
// Cockpit's own API: base1/cockpit.js, which index.html loads before the bundle, sets window.cockpit.
export default window.cockpit;
