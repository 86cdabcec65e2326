// vgi-vision gallery: progressive enhancement only; every control also works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Changing the order or the confidence range applies the filter at once.
  for (const control of document.querySelectorAll("#filters select, #filters input[type=number]")) {
    control.addEventListener("change", () => control.form.requestSubmit());
  }
  // Left and right arrow keys page through the grid, or step from image to image on a detail
  // page; Escape goes back to the grid (not while typing in a field).
  const keys = {ArrowRight: "next", ArrowLeft: "prev", Escape: "back"};
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    const link = document.getElementById(keys[event.key] || "");
    if (link) window.location.href = link.href;
  });
});
