// service worker: version __APP_VERSION__; assets __APP_ASSETS__
