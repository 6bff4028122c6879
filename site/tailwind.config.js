// Tailwind (npm tailwindcss 3, run by scripts/site): the Frequency night-time theme.
/** @type {import('tailwindcss').Config} */
module.exports = {
  content: ["./index.html", "./src/**/*.rs"],
  theme: {
    extend: {
      colors: {
        night: "#0b0620",
        dusk: "#1a0b3d",
        violet: "#7b2cff",
        magenta: "#ff2e88",
        cyan: "#2ee6ff",
        acid: "#e8ff3a",
        mist: "#c9c2e6",
      },
      fontFamily: {
        sans: ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        mono: ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
      },
    },
  },
  plugins: [],
};
