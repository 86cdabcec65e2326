// vgi-vision gallery: progressive enhancement only; every control also works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Changing the order or the confidence range applies the filter at once.
  for (const control of document.querySelectorAll("#filters select, #filters input[type=number]")) {
    control.addEventListener("change", () => control.form.requestSubmit());
  }
  // Left and right arrow keys page through the grid (not while typing in a field).
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    const link = document.getElementById(event.key === "ArrowRight" ? "next" : event.key === "ArrowLeft" ? "prev" : "");
    if (link) window.location.href = link.href;
  });
});
